# syntax=docker/dockerfile:1
# Flywheel worker and trainer image (one image, the command picks the role):
#
#   docker build -t flywheel:0.1.0 .
#   docker run flywheel:0.1.0                                     # run --config /etc/flywheel/pipeline.json
#   docker run flywheel:0.1.0 train --config /etc/flywheel/trainer.json
#
# Three stages: prod-deps (production node_modules only), build (all dependencies, `npm run build`
# compiles the TypeScript to dist/, mirroring the source tree), runtime (the two copied in, no
# compiler, no dev dependencies, no sources). Runs as the image's unprivileged `node` user (uid 1000).
# Debian (glibc), not Alpine: chdb and onnxruntime-node ship glibc binaries.
# Linted, never built here (no Docker on these machines): bash deploy/lint-tools.sh dockerfile Dockerfile
ARG NODE_IMAGE=node:20.19-bookworm-slim

FROM ${NODE_IMAGE} AS base
WORKDIR /src
# .npmrc turns off onnxruntime-node's download of GPU provider libraries (the CPU runtime is in
# the package). `npm install`, not `npm ci`: npm ci refuses this lock file, which cannot list
# chdb's binaries for other platforms (see .ci/run).
COPY package.json package-lock.json .npmrc ./

FROM base AS prod-deps
# Only `dependencies`: the test checks that they cover every package the built code imports.
RUN npm install --omit=dev --no-audit --no-fund && npm cache clean --force

FROM base AS build
RUN npm install --no-audit --no-fund
COPY . .
RUN npm run build

FROM ${NODE_IMAGE} AS runtime
# In a container the metrics/health/dashboard port must be reachable from outside it (probes,
# Prometheus, the dashboard); on a plain machine the worker binds 127.0.0.1.
ENV NODE_ENV=production \
    FLYWHEEL_HTTP_HOST=0.0.0.0 \
    FLYWHEEL_HTTP_PORT=9464
WORKDIR /app
COPY --from=prod-deps /src/package.json /src/package-lock.json ./
COPY --from=prod-deps /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# Default configs; compose and Kubernetes mount theirs over /etc/flywheel.
COPY deploy/pipeline.json deploy/trainer.json /etc/flywheel/
# Relative paths in the configs (.flywheel/clickhouse, .flywheel/trainer/...) resolve from /app:
# the one tree the process writes, owned by `node` so that a fresh named volume mounted on it
# (the trainer's state, the shared models directory) starts out owned by `node` too.
RUN mkdir -p /app/.flywheel/trainer/models && chown -R node:node /app/.flywheel
# Numeric (the image's `node` user): Kubernetes' runAsNonRoot can only verify a numeric user.
USER 1000:1000
EXPOSE 9464
# No curl in the slim image; Node 20's fetch does it. /healthz answers while the process is alive
# and its loop turns; readiness (/readyz) is the orchestrator's business (see deploy/k8s).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.FLYWHEEL_HTTP_PORT || '9464') + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "dist/cli/main.js"]
CMD ["run", "--config", "/etc/flywheel/pipeline.json"]
