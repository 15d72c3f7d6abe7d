# One image for the whole product: /operator (the Deployment OLM installs), /agent (the per-node DaemonSet the
# operator renders) and /labvm (the echo server and client the data-path tests run as pods).
# Build: make docker-build IMG=...   (BuildKit is needed for the cache mounts).

FROM golang:1.26 AS builder
ARG TARGETOS
ARG TARGETARCH
WORKDIR /workspace

# Download modules first: this layer is reused as long as go.mod and go.sum do not change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download

# The sources: .dockerignore admits only the Go packages the three programs are built from.
COPY . .

# Static binaries: the runtime image has no libc.
ENV CGO_ENABLED=0 GOTOOLCHAIN=local
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -trimpath -ldflags="-s -w" -o /out/ ./cmd/agent ./cmd/operator ./test/lab/cmd/labvm

# distroless/static: CA certificates, /etc/passwd with the nonroot user, nothing else.
FROM gcr.io/distroless/static:nonroot
WORKDIR /
COPY --from=builder /out/agent /out/operator /out/labvm /
# The operator runs as this user; the agent's DaemonSet sets runAsUser 0 itself (its capabilities need root).
USER 65532:65532
ENTRYPOINT ["/operator"]
