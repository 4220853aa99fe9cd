# kbp image: `docker build -t kbp .` (deploy/ expects it as image "kbp"; set
# the name with `kustomize edit set image`).
#
# The build stage runs the Makefile itself (`make build`: the Debian packages
# of scripts/install-deps.sh, npm ci, clang for bpf/, cmake-js for the addon
# against the image's own Node headers, tsc), so the image is built exactly as
# a developer's tree is; test/deploy/dockerfile.test.ts checks that the two
# stay in step (targets, artifacts copied, shared libraries installed).
# Both stages use the same Node and Debian release: the addon links the
# build stage's libbpf/libelf and finds the same sonames at run time.
ARG NODE_VERSION=22
ARG DEBIAN_RELEASE=bookworm

FROM node:${NODE_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
RUN make build && npm prune --omit=dev

FROM node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim
# libbpf1, libelf1, zlib1g: what the addon links (besides libc/libstdc++, in
# the base image). iptables: `kbp cleanup-iptables`. iproute2: tc/ip for
# looking at a node by hand.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libbpf1 libelf1 zlib1g iptables iproute2 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/kbp
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/bin ./bin
COPY --from=build /src/dist ./dist
COPY --from=build /src/build/bpf ./build/bpf
COPY --from=build /src/build/addon/Release/kbp_native.node ./build/addon/Release/kbp_native.node
ENTRYPOINT ["node", "/opt/kbp/bin/kbp.js"]
CMD ["agent"]
