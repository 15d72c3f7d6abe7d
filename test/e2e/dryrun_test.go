//go:build e2e

package e2e

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/ipvs-operator/ipvs-operator/test/install"
)

// The dry run (`make test-e2e-dryrun`, part of `make test`): setUp's steps up to the first one that needs the
// cluster's API server, and tearDown, run against fakeRunner, which answers docker, kind, kubectl and
// operator-sdk as a laptop with a fresh kind cluster would, and records every command line. The tests check
// those lines, so that the commands the kind suite runs are checked on a machine without a Docker engine.
// What the fake answers is an assumption about docker and kind (their output formats), written next to each
// answer.

// fakeRunner records command lines (with "$TMP" and "$REPO" for the run's directories, and the extra
// environment in front) and answers them with answer.
type fakeRunner struct {
	calls  []string
	tmp    *string
	repo   string
	answer func(argv []string) (string, error)
}

func (f *fakeRunner) record(env []string, argv []string) {
	line := strings.Join(append(slices.Clone(env), argv...), " ")
	if *f.tmp != "" {
		line = strings.ReplaceAll(line, *f.tmp, "$TMP")
	}
	f.calls = append(f.calls, strings.ReplaceAll(line, f.repo, "$REPO"))
}

func (f *fakeRunner) Run(_ context.Context, env []string, _ io.Reader, argv ...string) (string, error) {
	f.record(env, argv)
	return f.answer(argv)
}

func (f *fakeRunner) Stream(_ context.Context, argv ...string) error {
	f.record(nil, argv)
	_, err := f.answer(argv)
	return err
}

func (f *fakeRunner) LookPath(file string) (string, error) {
	return "/usr/bin/" + filepath.Base(file), nil
}

// laptop answers as docker and kind do on a machine with rootful Docker and no cluster named cluster yet
// (existing: one with that name), nodes <cluster>-control-plane and <cluster>-worker.
func laptop(cluster string, existing bool) func(argv []string) (string, error) {
	return answers(cluster, existing, false)
}

// answers is laptop, with a rootless Docker engine if rootless.
func answers(cluster string, existing, rootless bool) func(argv []string) (string, error) {
	return func(argv []string) (string, error) {
		cmd := strings.Join(argv, " ")
		switch {
		case cmd == "kind get clusters":
			// One cluster name per line.
			if existing {
				return "other\n" + cluster + "\n", nil
			}
			return "other\n", nil
		case strings.HasPrefix(cmd, "kind get kubeconfig"):
			// A kubeconfig whose server is never contacted: the dry run stops before the API is needed.
			return "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster: {server: 'https://127.0.0.1:1'}\n" +
				"contexts:\n- name: k\n  context: {cluster: k, user: u}\ncurrent-context: k\nusers:\n- name: u\n  user: {token: t}\n", nil
		case strings.HasPrefix(cmd, "kind get nodes"):
			// One node name per line, in no particular order.
			return cluster + "-worker\n" + cluster + "-control-plane\n", nil
		case strings.HasPrefix(cmd, "docker inspect -f {{with index .NetworkSettings.Networks"):
			return "172.18.0.2\n", nil
		case strings.HasPrefix(cmd, "docker port"):
			// One published address per line.
			return "127.0.0.1:32768\n[::1]:32768\n", nil
		case strings.HasPrefix(cmd, "docker inspect -f {{json .NetworkSettings.Networks}}"):
			return `{"bridge":{}}` + "\n", nil
		case strings.HasPrefix(cmd, "docker image inspect -f "+platformFormat):
			return "linux/amd64\n", nil
		case cmd == "docker info --format {{json .SecurityOptions}}":
			if rootless {
				return `["name=seccomp,profile=builtin","name=rootless","name=cgroupns"]` + "\n", nil
			}
			return `["name=apparmor","name=seccomp,profile=builtin","name=cgroupns"]` + "\n", nil
		}
		return "", nil
	}
}

// failing makes answer fail the commands that start with prefix, as `kind load docker-image` does under
// Docker's containerd image store (kind issue 3795).
func failing(answer func([]string) (string, error), prefix string) func([]string) (string, error) {
	return func(argv []string) (string, error) {
		if strings.HasPrefix(strings.Join(argv, " "), prefix) {
			err := errors.New("exit status 1")
			return "ctr: content digest sha256:0123: not found", &commandError{Argv: argv, Err: err, Output: "ctr: content digest sha256:0123: not found"}
		}
		return answer(argv)
	}
}

// dryRunConfig is the configuration loadConfig makes from an empty environment, with tools named plainly.
func dryRunConfig(t *testing.T, edit func(*config)) config {
	t.Helper()
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	c := config{
		Docker: "docker", Kind: "kind", Kubectl: "kubectl", Kustomize: "kustomize", OperatorSDK: "operator-sdk",
		Cluster: "e2e", Workers: 1, Image: "op:v1", LabImage: "op-lab:v1", KubeProxyMode: "none", Scope: scopeAll,
		OLMVersion: "0.28.0", RepoRoot: root,
	}
	if edit != nil {
		edit(&c)
	}
	return c
}

// dryRun runs setUp's steps up to the first that needs the API server against a fakeRunner, and returns
// the cluster and the command lines.
func dryRun(t *testing.T, cfg config, answer func([]string) (string, error)) (*cluster, []string, error) {
	t.Helper()
	var tmp string
	f := &fakeRunner{tmp: &tmp, repo: cfg.RepoRoot, answer: answer}
	c, err := newCluster(cfg, f, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	tmp = c.tmp
	t.Cleanup(func() { os.RemoveAll(c.tmp) })
	steps := c.setUpSteps()
	i := slices.IndexFunc(steps, func(s setUpStep) bool { return s.needsAPI })
	err = c.runSteps(context.Background(), steps[:i], func(string) {})
	return c, f.calls, err
}

const (
	inspectIP = "docker inspect -f {{with index .NetworkSettings.Networks \"kind\"}}{{.IPAddress}}{{end}} "
	taint     = "kubectl --kubeconfig $TMP/kubeconfig taint nodes --all node-role.kubernetes.io/control-plane:NoSchedule-"
)

// helpers are the commands that start the outside host and the tools containers of the e2e cluster's nodes.
var helpers = []string{
	"docker rm -f e2e-outside",
	"docker run -d --name e2e-outside --network kind --cap-add NET_ADMIN --cap-add NET_RAW --user 0 --entrypoint sleep op-lab:v1 infinity",
	inspectIP + "e2e-control-plane",
	"docker exec e2e-outside ip route replace 10.96.0.0/16 via 172.18.0.2",
	"docker rm -f e2e-control-plane-tools",
	"docker run -d --name e2e-control-plane-tools --network container:e2e-control-plane --cap-add NET_ADMIN --user 0 --entrypoint sleep op-lab:v1 infinity",
	"docker rm -f e2e-worker-tools",
	"docker run -d --name e2e-worker-tools --network container:e2e-worker --cap-add NET_ADMIN --user 0 --entrypoint sleep op-lab:v1 infinity",
}

func TestDryRunSetUp(t *testing.T) {
	info := "docker info --format {{json .SecurityOptions}}"
	connect := []string{"kind get kubeconfig --name e2e", "kind get nodes --name e2e", inspectIP + "e2e-control-plane", taint}
	build := []string{"docker build --target product -t op:v1 $REPO", "docker build --target lab -t op-lab:v1 $REPO"}
	load := []string{"kind load docker-image op:v1 --name e2e", "kind load docker-image op-lab:v1 --name e2e"}
	cat := func(parts ...[]string) []string { return slices.Concat(parts...) }

	for _, tc := range []struct {
		name     string
		edit     func(*config)
		existing bool
		answer   func(func([]string) (string, error)) func([]string) (string, error)
		want     []string
		kind     []string // lines the kind config must have
	}{
		{
			name: "defaults: no kube-proxy, kustomize (stops before the install applies objects)",
			want: cat([]string{info}, build, []string{"kind get clusters", "kind create cluster --name e2e --config $TMP/kind.yaml"}, connect, load, helpers),
			kind: []string{`  kubeProxyMode: "none"`, "- role: control-plane", "- role: worker"},
		},
		{
			name: "a reused cluster with images built already: nothing is built or created",
			edit: func(c *config) {
				c.Reuse, c.SkipBuild, c.KubeProxyMode, c.Scope = true, true, "iptables", scopeLabelled
			},
			existing: true,
			want:     cat([]string{info, "docker image inspect op:v1", "docker image inspect op-lab:v1", "kind get clusters"}, connect, load, helpers),
		},
		{
			name: "kind load docker-image fails (Docker's containerd image store): a single-platform archive is loaded",
			answer: func(a func([]string) (string, error)) func([]string) (string, error) {
				return failing(a, "kind load docker-image")
			},
			want: cat([]string{info}, build, []string{"kind get clusters", "kind create cluster --name e2e --config $TMP/kind.yaml"}, connect, []string{
				"kind load docker-image op:v1 --name e2e",
				"docker image inspect -f " + platformFormat + " op:v1",
				"docker image save --platform linux/amd64 -o $TMP/op_v1.tar op:v1",
				"kind load image-archive $TMP/op_v1.tar --name e2e",
				"kind load docker-image op-lab:v1 --name e2e",
				"docker image inspect -f " + platformFormat + " op-lab:v1",
				"docker image save --platform linux/amd64 -o $TMP/op-lab_v1.tar op-lab:v1",
				"kind load image-archive $TMP/op-lab_v1.tar --name e2e",
			}, helpers),
		},
		{
			name: "OLM: local registry, bundle image pushed, operator-sdk run bundle (stops before waiting for the agents)",
			edit: func(c *config) { c.OLM, c.KubeProxyMode, c.Scope, c.Workers = true, "nftables", scopeLabelled, 1 },
			want: cat([]string{info}, build, []string{
				"docker rm -f e2e-registry",
				"docker run -d --name e2e-registry -p 127.0.0.1::5000 " + registryImage,
				"docker port e2e-registry 5000/tcp",
				"kind get clusters",
				"kind create cluster --name e2e --config $TMP/kind.yaml",
				"docker inspect -f {{json .NetworkSettings.Networks}} e2e-registry",
				"docker network connect kind e2e-registry",
				"kind get nodes --name e2e",
				"docker exec -i e2e-worker sh -c mkdir -p '/etc/containerd/certs.d/127.0.0.1:32768' && cat > '/etc/containerd/certs.d/127.0.0.1:32768/hosts.toml'",
				"docker exec -i e2e-control-plane sh -c mkdir -p '/etc/containerd/certs.d/127.0.0.1:32768' && cat > '/etc/containerd/certs.d/127.0.0.1:32768/hosts.toml'",
			}, connect, load, helpers, []string{
				"KUBECONFIG=$TMP/kubeconfig operator-sdk olm install --version 0.28.0 --timeout 5m",
				"docker build -f $TMP/bundle/bundle.Dockerfile -t 127.0.0.1:32768/ipvs-operator-bundle:e2e $TMP/bundle",
				"docker push 127.0.0.1:32768/ipvs-operator-bundle:e2e",
				"kubectl --kubeconfig $TMP/kubeconfig apply -f -",
				"KUBECONFIG=$TMP/kubeconfig operator-sdk run bundle 127.0.0.1:32768/ipvs-operator-bundle:e2e --namespace ipvs-operator-system --install-mode AllNamespaces --use-http --timeout 10m",
			}),
			kind: []string{`  kubeProxyMode: "nftables"`, `    config_path = "/etc/containerd/certs.d"`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answer := laptop("e2e", tc.existing)
			if tc.answer != nil {
				answer = tc.answer(answer)
			}
			c, calls, err := dryRun(t, dryRunConfig(t, tc.edit), answer)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(calls, tc.want) {
				t.Errorf("commands:\n%s\nwant:\n%s", strings.Join(calls, "\n"), strings.Join(tc.want, "\n"))
			}
			for _, call := range calls {
				// Nothing is installed into a node, which may have no internet access or belong to a reused
				// cluster.
				if strings.Contains(call, "apt-get") || strings.HasPrefix(call, "docker cp") {
					t.Errorf("the suite changes a node: %s", call)
				}
			}
			if len(tc.kind) > 0 {
				b, err := os.ReadFile(filepath.Join(c.tmp, "kind.yaml"))
				if err != nil {
					t.Fatal(err)
				}
				for _, line := range tc.kind {
					if !slices.Contains(strings.Split(string(b), "\n"), line) {
						t.Errorf("the kind config lacks %q:\n%s", line, b)
					}
				}
			}
			if c.cfg.OLM {
				// The bundle's CSV names the image under test, which the nodes have loaded.
				csv, err := os.ReadFile(filepath.Join(c.tmp, "bundle", "manifests", "ipvs-operator.clusterserviceversion.yaml"))
				if err != nil {
					t.Fatal(err)
				}
				if strings.Contains(string(csv), defaultImage) || !strings.Contains(string(csv), "image: op:v1") {
					t.Errorf("the pushed bundle's CSV does not name the image under test op:v1")
				}
			}
		})
	}
}

// TestDryRunRootless: a rootless Docker engine is refused before anything is built or created.
func TestDryRunRootless(t *testing.T) {
	_, calls, err := dryRun(t, dryRunConfig(t, nil), answers("e2e", false, true))
	if err == nil || !strings.Contains(err.Error(), "rootless") {
		t.Errorf("got %v, want a rootless Docker engine refused", err)
	}
	if want := []string{"docker info --format {{json .SecurityOptions}}"}; !slices.Equal(calls, want) {
		t.Errorf("commands %q, want only %q", calls, want)
	}
}

// TestDryRunKustomizeInstall: the objects the kustomize install would apply (kustomize runs for real) run the
// image under test, never pulled, with the agent scope and, without kube-proxy, the API server's address.
func TestDryRunKustomizeInstall(t *testing.T) {
	kustomize := filepath.Join("..", "..", "bin", "kustomize")
	if _, err := os.Stat(kustomize); err != nil {
		t.Skipf("no bin/kustomize (make kustomize): %v", err)
	}
	c, _, err := dryRun(t, dryRunConfig(t, func(c *config) { c.Kustomize, _ = filepath.Abs(kustomize) }), laptop("e2e", false))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := install.Manifests(context.Background(), c.kustomizeOptions())
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(objs, func(o *unstructured.Unstructured) bool {
		return o.GetKind() == "Deployment" && o.GetName() == operatorDeployment
	})
	if i < 0 {
		t.Fatalf("no Deployment %s among the manifests", operatorDeployment)
	}
	var d appsv1.Deployment
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(objs[i].Object, &d); err != nil {
		t.Fatal(err)
	}
	ctr := d.Spec.Template.Spec.Containers[slices.IndexFunc(d.Spec.Template.Spec.Containers,
		func(c corev1.Container) bool { return c.Name == install.OperatorContainer })]
	if ctr.Image != "op:v1" || ctr.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("operator container runs %s (pull %s), want op:v1 never pulled", ctr.Image, ctr.ImagePullPolicy)
	}
	env := map[string]string{}
	for _, e := range ctr.Env {
		env[e.Name] = e.Value
	}
	for name, want := range map[string]string{"AGENT_SCOPE": scopeAll, apiServerAddressEnv: "172.18.0.2:6443",
		"KUBERNETES_SERVICE_HOST": "172.18.0.2", "KUBERNETES_SERVICE_PORT": "6443", install.AgentImageEnv: "op:v1"} {
		if env[name] != want {
			t.Errorf("operator env %s=%q, want %q", name, env[name], want)
		}
	}
}

// TestDryRunDriver: NodeExec runs ipvsadm and the echo client in the node's tools container and the node
// image's own tools in the node container; OutsideExec runs in the outside host.
func TestDryRunDriver(t *testing.T) {
	c, _, err := dryRun(t, dryRunConfig(t, nil), laptop("e2e", false))
	if err != nil {
		t.Fatal(err)
	}
	f := c.cmd.(*fakeRunner)
	f.calls = nil
	d := kindDriver{c: c}
	ctx := context.Background()
	// The fake answers every command; only the command lines matter here.
	for _, argv := range [][]string{
		{"ipvsadm", "-Sn"},
		{"ip", "-o", "addr", "show", "dev", "ipvs0"},
		append(d.ClientCommand(), "10.96.0.10:80"),
	} {
		if _, err := d.NodeExec(ctx, "e2e-worker", argv...); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := d.NodeExec(ctx, "e2e-control-plane", "nft", "list", "table", "inet", "ipvs-operator"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.OutsideExec(ctx, "arping", "-c", "2", "10.96.0.10"); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"docker exec e2e-worker-tools ipvsadm -Sn",
		"docker exec e2e-worker ip -o addr show dev ipvs0",
		"docker exec e2e-worker-tools /labvm client 10.96.0.10:80",
		"docker exec e2e-control-plane nft list table inet ipvs-operator",
		"docker exec e2e-outside arping -c 2 10.96.0.10",
	}
	if !slices.Equal(f.calls, want) {
		t.Errorf("commands:\n%s\nwant:\n%s", strings.Join(f.calls, "\n"), strings.Join(want, "\n"))
	}
}

func TestDryRunTearDown(t *testing.T) {
	for _, tc := range []struct {
		name           string
		edit           func(*config)
		existing       bool
		failed         bool
		want           []string
		wantTmpRemoved bool
	}{
		{
			name: "a cluster the suite made is deleted with its helpers",
			want: []string{"docker rm -f e2e-outside", "docker rm -f e2e-control-plane-tools", "docker rm -f e2e-worker-tools", "kind delete cluster --name e2e"},
		},
		{
			name: "a failed run exports the logs first",
			edit: func(c *config) { c.Artifacts = "/artifacts" }, failed: true,
			want: []string{"kind export logs /artifacts/kind-logs --name e2e", "docker rm -f e2e-outside", "docker rm -f e2e-control-plane-tools",
				"docker rm -f e2e-worker-tools", "kind delete cluster --name e2e"},
		},
		{
			name: "a reused cluster stays; the helpers go", edit: func(c *config) { c.Reuse = true }, existing: true,
			want: []string{"docker rm -f e2e-outside", "docker rm -f e2e-control-plane-tools", "docker rm -f e2e-worker-tools"},
		},
		{
			name: "E2E_KEEP_CLUSTER leaves everything", edit: func(c *config) { c.Keep = true },
			want: nil,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := dryRun(t, dryRunConfig(t, tc.edit), laptop("e2e", tc.existing))
			if err != nil {
				t.Fatal(err)
			}
			f := c.cmd.(*fakeRunner)
			f.calls = nil
			c.tearDown(context.Background(), tc.failed)
			if !slices.Equal(f.calls, tc.want) {
				t.Errorf("commands:\n%s\nwant:\n%s", strings.Join(f.calls, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

// TestDryRunPlan prints the commands `make test-e2e` would run with this environment's settings (IMG,
// KIND_CLUSTER, E2E_OLM, ...), as far as the dry run goes: `make test-e2e-dryrun` shows them.
func TestDryRunPlan(t *testing.T) {
	cfg, err := loadConfig()
	if err != nil {
		t.Fatalf("the environment's settings: %v", err)
	}
	_, calls, err := dryRun(t, cfg, laptop(cfg.Cluster, cfg.Reuse))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the commands up to the first that needs the API server:\n%s", strings.Join(calls, "\n"))
}
