# The main job in a container: the README's install command, then `dualwatch demo`.
# python:3.11-slim has no C compiler, so the optional C parts (the fused host kernel
# dualwatch/_hoststats.c and the scalar codec dualwatch/_scalarcodec.c) are skipped: the install
# still succeeds, CPU checks use framework ops and the writer protobuf and json (same bytes, slower).
FROM python:3.11-slim
RUN useradd --create-home --uid 1000 dualwatch
WORKDIR /app
RUN chown dualwatch:dualwatch /app
USER dualwatch
COPY --chown=dualwatch:dualwatch . /app
RUN python3 -m venv .venv && . .venv/bin/activate && pip install -c constraints.txt -e ".[all]"
ENV PATH="/app/.venv/bin:$PATH"
# made here, owned by the user, so that a named volume mounted on it (-v NAME:/app/runs) is writable
RUN mkdir -p runs
# VisualDL (seed 004's port) and TensorBoard, for `visualdl/tensorboard --logdir /app/runs --host 0.0.0.0`
EXPOSE 8040 6006
# run in WORKDIR /app, the demo writes its runs to /app/runs (its default --logdir is `runs`)
CMD ["dualwatch", "demo"]
