# The README's main-job install steps. The full python image carries a C compiler, so the fused
# host kernel (dualwatch/_hoststats.c) is built; on a slim image the install still succeeds and
# CPU checks fall back to framework ops.
FROM python:3.11
WORKDIR /app
COPY . /app
RUN python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e ".[all]"
ENV PATH="/app/.venv/bin:$PATH"
CMD ["dualwatch", "demo"]
