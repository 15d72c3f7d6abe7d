# Two images from one Dockerfile:
# - the product (stage `product`, the default target: the last stage): /operator (the Deployment OLM
#   installs) and /agent (the per-node DaemonSet the operator renders, and its module-loading init container);
# - a test image (stage `lab`): /labvm, the echo server and client that the kind suite's pods run, with
#   ipvsadm, arping and iproute2 for the suite's helper containers. Test code never ships in the product.
# Build: make docker-build IMG=...  and  make docker-build-lab LAB_IMG=...   (BuildKit is needed for the cache
# mounts; it builds only the stages the chosen target needs).

FROM golang:1.26 AS deps
WORKDIR /workspace

# Download modules first: this layer is reused as long as go.mod and go.sum do not change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download

# The sources: .dockerignore admits only the Go packages the programs are built from.
COPY . .

# Static binaries: the runtime images have no libc.
ENV CGO_ENABLED=0 GOTOOLCHAIN=local

FROM deps AS lab-builder
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w" -o /out/ ./test/lab/cmd/labvm

# The test image: the echo server and client the scenarios' pods run (as 65532), and the kind suite's helper
# containers (run as root): the outside host and each node's tools container, which read and change the
# node's IPVS table with ipvsadm and send ARP with arping, so that nothing is ever installed into a kind node.
# Debian's packages are installed here, at build time, on the machine that builds the image.
FROM debian:bookworm-slim AS lab
RUN apt-get update \
 && apt-get install -y --no-install-recommends ipvsadm iputils-arping iproute2 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /
COPY --from=lab-builder /out/labvm /
USER 65532:65532
ENTRYPOINT ["/labvm"]

FROM deps AS builder
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/agent ./cmd/operator

# The product. distroless/static: CA certificates, /etc/passwd with the nonroot user, nothing else.
FROM gcr.io/distroless/static:nonroot AS product
WORKDIR /
COPY --from=builder /out/agent /out/operator /
# The operator runs as this user; the agent's DaemonSet sets runAsUser 0 itself (its capabilities need root).
USER 65532:65532
ENTRYPOINT ["/operator"]
