# The same install steps as the README's main-job command; the image runs the demo by default.
FROM python:3.11-slim
WORKDIR /app
COPY . /app
RUN python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e ".[all]"
ENV PATH="/app/.venv/bin:$PATH"
CMD ["dualwatch", "demo"]
