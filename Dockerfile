# The meshca image, for docker compose (docker-compose.yml) and Kubernetes (deploy/kubernetes/):
#   docker build -t <registry>/meshca:0.1.0 .
# Two stages: the builder has the toolchain the native addons need (better-sqlite3's, meshca's ECDSA verifier) and the dev
# dependencies tsc needs; the runtime image gets only production node_modules, dist/, proto/ and
# migrations/, and runs as an unprivileged user.

FROM node:20-bookworm-slim AS builder
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY package.json package-lock.json ./
# npm ci's install script builds the native ECDSA verifier; without it the image would fall back to node:crypto.
COPY native ./native
COPY scripts/build-native.mjs ./scripts/
RUN MESHCA_REQUIRE_NATIVE=1 npm ci
COPY tsconfig.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json ./
COPY --from=builder /build/node_modules ./node_modules
COPY --from=builder /build/dist ./dist
COPY --from=builder /build/native/build/Release/meshca_native.node ./native/build/Release/
COPY proto ./proto
COPY migrations ./migrations
# The data dir belongs to the runtime user, so an empty named volume mounted there inherits it.
# 65532 is the uid/gid deploy/kubernetes/deployment.yaml runs as.
RUN mkdir -p /var/lib/meshca && chown 65532:65532 /var/lib/meshca && chmod 0700 /var/lib/meshca
USER 65532:65532
VOLUME ["/var/lib/meshca"]
EXPOSE 15012 8443 15014
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["serve", "--data-dir", "/var/lib/meshca"]
