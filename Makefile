# ipvs-operator: a Kubernetes ClusterIP proxy on the kernel's IPVS.
# `make test` runs every test (unit, envtest, bundle validation, the lab's real-kernel suite);
# `make demo` shows the whole thing working in the lab.

IMG ?= ghcr.io/ipvs-operator/ipvs-operator:v0.1.0
KUBE_VERSION ?= 1.37.1
LOCALBIN ?= $(shell pwd)/bin
KUBE_BIN := $(LOCALBIN)/k8s/$(KUBE_VERSION)
GOPROXY_FIRST := $(shell go env GOPROXY | cut -d, -f1)
export GOTOOLCHAIN := local

CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
CONTROLLER_TOOLS_VERSION ?= v0.23.0
KUSTOMIZE ?= $(LOCALBIN)/kustomize
KUSTOMIZE_VERSION ?= v5.8.2
GINKGO ?= $(LOCALBIN)/ginkgo
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint
GOLANGCI_LINT_VERSION ?= v2.15.0

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Display this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate the CRD and the RBAC roles of the agent and the operator from markers.
	$(CONTROLLER_GEN) crd paths="./api/..." output:crd:artifacts:config=config/crd/bases
	$(CONTROLLER_GEN) rbac:roleName=agent-role paths="./controllers/agent/..." output:rbac:artifacts:config=config/rbac/agent
	$(CONTROLLER_GEN) rbac:roleName=manager-role paths="./controllers/operator/..." output:rbac:artifacts:config=config/rbac

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object paths="./api/..."

.PHONY: fmt
fmt: ## Run go fmt.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet, including the build-tagged suites (lab, kernel, e2e).
	go vet ./...
	go vet -tags lab,kernel,e2e ./...

.PHONY: lint
lint: golangci-lint ## Run golangci-lint (.golangci.yml; the lab, kernel and e2e tags included).
	$(GOLANGCI_LINT) run ./...

.PHONY: lint-fix
lint-fix: golangci-lint ## Run golangci-lint and apply the fixes it can make.
	$(GOLANGCI_LINT) run --fix ./...

.PHONY: envtest
envtest: ## Build (once) the kube-apiserver and etcd that envtest runs, into bin/k8s.
	hack/build-kube.sh etcd kube-apiserver kubectl

# The packages with concurrent code (the sync engine, the fakes, the reconcilers) run under the race detector;
# the rest once without it. Both write atomic-mode coverage, merged into cover.out.
MODULE := $(shell go list -m)
RACE_PKGS := ./ipvs/... ./controllers/...
OTHER_PKGS = $(shell go list ./... | grep -v -E '^$(MODULE)/(ipvs|controllers)(/|$$)')

.PHONY: test-unit
test-unit: manifests generate fmt vet envtest kustomize ## Unit and envtest suites (ipvs and controllers with -race).
	KUBEBUILDER_ASSETS=$(KUBE_BIN) go test -race -covermode=atomic -coverprofile cover.out $(RACE_PKGS)
	KUBEBUILDER_ASSETS=$(KUBE_BIN) go test -covermode=atomic -coverprofile cover.other.out $(OTHER_PKGS)
	tail -n +2 cover.other.out >> cover.out && rm cover.other.out

# Each fuzz target runs a fixed number of inputs on top of its seeds (-fuzz takes one target per run); a
# failing input is written to the package's testdata/fuzz/<Target>/. The budgets are counts (Nx), not
# durations: a duration races the fuzzing coordinator's own deadline on a busy machine and fails with a bare
# "context deadline exceeded" that found nothing. Each is about 10 s here. FUZZTIME=30s (or 1000000x)
# overrides all of them. Add new targets here.
FUZZ_FORSERVICE ?= $(or $(FUZZTIME),30000x)
FUZZ_COMPUTE ?= $(or $(FUZZTIME),60000x)
FUZZ_PARSESAVE ?= $(or $(FUZZTIME),300000x)
FUZZ_PROCTABLE ?= $(or $(FUZZTIME),200000x)

.PHONY: test-fuzz
test-fuzz: ## Run each fuzz target briefly (about 10 s each; FUZZTIME=<duration or Nx> for longer).
	go test -run '^$$' -fuzz '^FuzzForService$$' -fuzztime $(FUZZ_FORSERVICE) ./controllers/agent/desired/
	go test -run '^$$' -fuzz '^FuzzCompute$$' -fuzztime $(FUZZ_COMPUTE) ./ipvs/plan/
	go test -run '^$$' -fuzz '^FuzzParseSave$$' -fuzztime $(FUZZ_PARSESAVE) ./ipvs/
	go test -run '^$$' -fuzz '^FuzzParseProcTable$$' -fuzztime $(FUZZ_PROCTABLE) ./ipvs/

.PHONY: test
test: lint test-unit test-fuzz test-bundle test-e2e-compile test-e2e-dryrun test-lab test-lab-6.12 test-upstream-smoke ## Every test: lint, unit, envtest, fuzz (briefly), bundle, e2e (compiled, dry run), lab (real kernel: 6.1 in full, 6.12 core), upstream's e2e smoke.

# The lab suites boot a VM each: run them one package at a time (-p 1) on a 2-core machine.
.PHONY: test-lab
test-lab: kustomize envtest lab-deps ## The real-kernel suites: lab smoke, the root-only tests (ipvs, nftrules, syncer, node lock) in the VM, dataplane scenarios, the cluster without Node pod CIDRs, the scale harness's 100-Service smoke run.
	BENCH_SERVICES= go test -tags lab -p 1 -count=1 -timeout 60m ./test/lab/ ./test/lab/dataplane/ ./test/lab/detectlocal/ ./test/bench/ -ginkgo.v

# The second lab kernel, Debian 12's 6.12: compressed (.ko.xz) modules the agent's init container loads itself.
# The kernel tests and the core scenarios run there; the full suite runs on the default 6.1 above.
LAB_CORE_FOCUS ?= init container|kernel tests|ClusterIP Service over a Deployment|who can reach|endpoint changes|UDP
.PHONY: test-lab-6.12
test-lab-6.12: kustomize envtest lab-deps ## The kernel tests and core dataplane scenarios on the 6.12 lab kernel (LAB_KERNEL=6.12).
	LAB_KERNEL=6.12 go test -tags lab -p 1 -count=1 -timeout 40m ./test/lab/dataplane/ -ginkgo.v -ginkgo.focus='$(LAB_CORE_FOCUS)'

# Kubernetes' own sig-network e2e specs (e2e.test and agnhost of k8s.io/kubernetes, built once into bin/k8s by
# hack/build-kube-e2e.sh) against the lab: agents in scope all, no kube-proxy. test/upstream/skip.txt says
# what is not run and why; the JUnit report and a summary land in .upstream/<set>/.
.PHONY: upstream-deps
upstream-deps: ## Build (once) upstream's e2e.test and agnhost into bin/k8s.
	hack/build-kube-e2e.sh

.PHONY: test-upstream
test-upstream: kustomize lab-deps upstream-deps ## Upstream's sig-network ClusterIP e2e specs in the lab (UPSTREAM_FOCUS=<regexp> narrows them).
	UPSTREAM_SET=full go test -v -tags lab -p 1 -count=1 -timeout 180m ./test/upstream/ -ginkgo.v

.PHONY: test-upstream-smoke
test-upstream-smoke: kustomize lab-deps upstream-deps ## The core subset of test-upstream (a few minutes; the last step of `make test`).
	UPSTREAM_SET=smoke go test -v -tags lab -p 1 -count=1 -timeout 60m ./test/upstream/ -ginkgo.v

# The scale harness (test/bench): N Services x M endpoints written to the lab's API server, a proxy measured
# from outside (the kernel seen from the node, /proc, its metrics) next to a raw netlink loop. One lab per size.
BENCH_SERVICES ?= 1000,10000
# The table's columns: our agent and kube-proxy v1.37.1 (built by lab-deps) in nftables, iptables and ipvs modes
# (ipvs last: its --cleanup leaves some iptables chains in the guest).
BENCH_PROXIES ?= agent,kube-proxy-nftables,kube-proxy-iptables,kube-proxy-ipvs
# ipvs mode's full syncs took 8 s each at 1,000 Services (its 200 flips 27 min): not at 10,000 by default;
# iptables mode not either (README: what a 10,000 run would cost).
BENCH_PROXIES_10000 ?= agent,kube-proxy-nftables
.PHONY: bench
bench: lab-deps ## The scale harness at full sizes: one table per size (BENCH_SERVICES=1000,10000; BENCH_PROXIES=agent,kube-proxy-nftables,kube-proxy-iptables,kube-proxy-ipvs; BENCH_OUT=<file> keeps them).
	BENCH_SERVICES=$(BENCH_SERVICES) BENCH_PROXIES=$(BENCH_PROXIES) BENCH_PROXIES_10000=$(BENCH_PROXIES_10000) go test -v -tags lab -p 1 -count=1 -timeout 300m ./test/bench/ -ginkgo.v

# The long run of the model-based churn test (test/dataplane/churn.go); `make test` runs a short one.
CHURN_STEPS ?= 300
.PHONY: test-churn
test-churn: kustomize envtest lab-deps ## The long churn run in the lab (CHURN_STEPS=300; CHURN_SEED=<seed> replays a run).
	CHURN_STEPS=$(CHURN_STEPS) go test -v -tags lab -p 1 -count=1 -timeout 180m ./test/lab/dataplane/ -ginkgo.v -ginkgo.label-filter=churn

.PHONY: lab-deps
lab-deps: ## Debian packages, Kubernetes binaries and CoreDNS the lab needs (installed/built once).
	hack/install-packages.sh
	hack/build-kube.sh
	hack/build-coredns.sh

##@ Lab

.PHONY: demo
demo: kustomize lab-deps ## Show ipvs-operator working end to end in the lab, then tear it down.
	go run ./test/lab/cmd/demo

.PHONY: lab-up
lab-up: kustomize lab-deps ## Start a ready lab in the background (CoreDNS, the operator from config/, agents in scope all) and print its kubeconfig.
	go run ./test/lab/cmd/lab up --detach

.PHONY: lab-down
lab-down: ## Stop the lab started by lab-up.
	go run ./test/lab/cmd/lab down

##@ Build

.PHONY: build
build: manifests generate fmt vet ## Build the agent and operator binaries.
	CGO_ENABLED=0 go build -o $(LOCALBIN)/agent ./cmd/agent
	CGO_ENABLED=0 go build -o $(LOCALBIN)/operator ./cmd/operator

.PHONY: run
run: manifests generate ## Run the agent on this host against the current kubeconfig (root, a kernel with IPVS).
	go run ./cmd/agent --node-name=$${NODE_NAME:-$$(hostname)}

##@ Tools

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN)
$(CONTROLLER_GEN):
	GOBIN=$(LOCALBIN) GOPROXY=$(GOPROXY_FIRST) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)

.PHONY: golangci-lint
golangci-lint: $(GOLANGCI_LINT)
$(GOLANGCI_LINT):
	GOBIN=$(LOCALBIN) GOPROXY=$(GOPROXY_FIRST) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

.PHONY: kustomize
kustomize: $(KUSTOMIZE)
$(KUSTOMIZE):
	GOBIN=$(LOCALBIN) GOPROXY=$(GOPROXY_FIRST) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

##@ Bundle

# The OLM bundle of this version (bundle/, committed; `make test-bundle` checks it is current).
VERSION ?= 0.1.0
CHANNELS ?= alpha
DEFAULT_CHANNEL ?= alpha
BUNDLE_METADATA_OPTS ?= --channels=$(CHANNELS) --default-channel=$(DEFAULT_CHANNEL)
IMAGE_TAG_BASE ?= ghcr.io/ipvs-operator/ipvs-operator
BUNDLE_IMG ?= $(IMAGE_TAG_BASE)-bundle:v$(VERSION)
CONTAINER_TOOL ?= docker
PLATFORMS ?= linux/amd64,linux/arm64
OPERATOR_SDK ?= $(LOCALBIN)/operator-sdk
OPERATOR_SDK_VERSION ?= v1.42.3
BUNDLE_ENV = KUSTOMIZE=$(KUSTOMIZE) OPERATOR_SDK=$(OPERATOR_SDK) VERSION=$(VERSION) BUNDLE_METADATA_OPTS="$(BUNDLE_METADATA_OPTS)"

.PHONY: operator-sdk
operator-sdk: ## Build operator-sdk (once, cached) into bin/.
	OPERATOR_SDK_VERSION=$(OPERATOR_SDK_VERSION) LOCALBIN=$(LOCALBIN) hack/build-operator-sdk.sh operator-sdk

.PHONY: opm
opm: ## Build opm (once, cached) into bin/, for file-based catalogs (`bin/opm render`, `bin/opm validate`).
	LOCALBIN=$(LOCALBIN) hack/build-operator-sdk.sh opm

.PHONY: bundle
bundle: manifests kustomize operator-sdk ## Regenerate bundle/ for IMG and VERSION, then validate it.
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(BUNDLE_ENV) hack/generate-bundle.sh bundle
	$(OPERATOR_SDK) bundle validate ./bundle --select-optional suite=operatorframework

.PHONY: test-bundle
test-bundle: manifests kustomize operator-sdk ## Check that bundle/ is what `make bundle` generates now and that it validates.
	$(BUNDLE_ENV) hack/check-bundle.sh bundle

.PHONY: bundle-build
bundle-build: ## Build the bundle image BUNDLE_IMG from bundle/bundle.Dockerfile.
	$(CONTAINER_TOOL) build -f bundle/bundle.Dockerfile -t $(BUNDLE_IMG) bundle

.PHONY: bundle-push
bundle-push: ## Push the bundle image.
	$(CONTAINER_TOOL) push $(BUNDLE_IMG)

# The test image: /labvm, the echo server and client the kind suite's pods run (never part of IMG).
LAB_IMG ?= $(IMAGE_TAG_BASE)-lab:v$(VERSION)

.PHONY: docker-build
docker-build: ## Build the product image IMG holding /operator and /agent (Dockerfile target product).
	$(CONTAINER_TOOL) build --target product -t $(IMG) .

.PHONY: docker-build-lab
docker-build-lab: ## Build the test image LAB_IMG holding /labvm (Dockerfile target lab), for the kind suite.
	$(CONTAINER_TOOL) build --target lab -t $(LAB_IMG) .

.PHONY: docker-push
docker-push: ## Push the image IMG.
	$(CONTAINER_TOOL) push $(IMG)

.PHONY: docker-buildx
docker-buildx: ## Build and push IMG for every platform in PLATFORMS.
	$(CONTAINER_TOOL) buildx build --push --platform=$(PLATFORMS) --target product --tag $(IMG) .

.PHONY: build-installer
build-installer: manifests kustomize ## Write dist/install.yaml: everything `make deploy` applies, in one file.
	mkdir -p dist
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default > dist/install.yaml

.PHONY: deploy
deploy: manifests kustomize ## Install the operator with kustomize into the current kubeconfig's cluster.
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default | kubectl apply --server-side -f -

.PHONY: undeploy
undeploy: kustomize ## Remove what `make deploy` installed (ServicePolicies and the CRD included).
	$(KUSTOMIZE) build config/default | kubectl delete --ignore-not-found=true -f -

##@ E2E

KIND ?= kind
KIND_CLUSTER ?= ipvs-operator-e2e
E2E_FLAGS ?=

.PHONY: test-e2e
test-e2e: manifests kustomize ## Run the data-path suite in a kind cluster (needs Docker and kind; E2E_OLM=true installs through OLM).
	$(if $(filter true,$(E2E_OLM)),$(MAKE) operator-sdk,)
	KIND=$(KIND) KIND_CLUSTER=$(KIND_CLUSTER) IMG=$(IMG) E2E_LAB_IMG=$(LAB_IMG) VERSION=$(VERSION) CONTAINER_TOOL=$(CONTAINER_TOOL) \
	  KUSTOMIZE=$(KUSTOMIZE) OPERATOR_SDK=$(OPERATOR_SDK) \
	  go test -tags e2e ./test/e2e/ -v -count=1 -timeout 90m -ginkgo.timeout=85m -ginkgo.v $(E2E_FLAGS)

.PHONY: test-e2e-compile
test-e2e-compile: ## Compile and vet the e2e suite without running it (what `make test` can do without Docker).
	go vet -tags e2e ./test/e2e/...
	go test -tags e2e -c -o /dev/null ./test/e2e/

# The dry run: setUp up to the first step that needs the cluster's API server, and tearDown, against a fake
# command runner; it checks every docker/kind/kubectl/operator-sdk command line the suite would run (seconds,
# no Docker engine). -v prints TestDryRunPlan: the commands `make test-e2e` would run with these settings.
.PHONY: test-e2e-dryrun
test-e2e-dryrun: kustomize ## Check the kind suite's command lines against a fake docker/kind (no Docker needed).
	KIND=$(KIND) KIND_CLUSTER=$(KIND_CLUSTER) IMG=$(IMG) E2E_LAB_IMG=$(LAB_IMG) VERSION=$(VERSION) CONTAINER_TOOL=$(CONTAINER_TOOL) \
	  KUSTOMIZE=$(KUSTOMIZE) OPERATOR_SDK=$(OPERATOR_SDK) \
	  go test -tags e2e ./test/e2e/ -count=1 -run '^TestDryRun' -v
