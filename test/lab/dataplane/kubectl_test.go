//go:build lab

package dataplane_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gbytes"

	"github.com/ipvs-operator/ipvs-operator/test/lab"
)

// kubectl runs the lab's kubectl binary as a person would, with the lab's kubeconfig; stdin may be empty.
// It returns stdout, and stderr apart (warnings such as Endpoints' deprecation go there).
func kubectl(ctx context.Context, stdin string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, theLab.Kubectl(), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+theLab.Kubeconfig())
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

func mustKubectl(ctx context.Context, args ...string) string {
	GinkgoHelper()
	out, errOut, err := kubectl(ctx, "", args...)
	Expect(err).NotTo(HaveOccurred(), "kubectl %s:\n%s%s", strings.Join(args, " "), out, errOut)
	return strings.TrimSpace(out)
}

// tutorialManifest is a Deployment of two echo pods behind a Service, and a client pod, as the ClusterIP
// tutorials write them: no labels on the Service, since the lab's agents serve every Service (scope all).
const tutorialManifest = `
apiVersion: apps/v1
kind: Deployment
metadata:
  name: backend
spec:
  replicas: 2
  selector:
    matchLabels: {app: backend}
  template:
    metadata:
      labels: {app: backend}
    spec:
      containers:
      - name: echo
        image: %[1]s
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: backend-service
spec:
  selector: {app: backend}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: client
spec:
  containers:
  - name: shell
    image: %[1]s
`

// registerKubectl walks the ClusterIP tutorial with kubectl: exec (curl in a pod), logs and port-forward
// reach the lab kubelets through kube-apiserver.
func registerKubectl() {
	It("serves kubectl exec, logs and port-forward: the ClusterIP tutorial as a person types it", func(ctx SpecContext) {
		ns := fmt.Sprintf("tutorial-%d", time.Now().UnixNano()%100000)
		mustKubectl(ctx, "create", "namespace", ns)
		DeferCleanup(func(ctx SpecContext) { _, _, _ = kubectl(ctx, "", "delete", "namespace", ns, "--wait=false") })
		out, errOut, err := kubectl(ctx, fmt.Sprintf(tutorialManifest, lab.EchoImage), "-n", ns, "apply", "-f", "-")
		Expect(err).NotTo(HaveOccurred(), out+errOut)
		mustKubectl(ctx, "-n", ns, "rollout", "status", "deployment/backend", "--timeout=3m")
		mustKubectl(ctx, "-n", ns, "wait", "--for=condition=Ready", "pod/client", "--timeout=2m")
		clusterIP := mustKubectl(ctx, "-n", ns, "get", "service", "backend-service", "-o", "jsonpath={.spec.clusterIP}")
		backends := func() []string {
			return strings.Fields(mustKubectl(ctx, "-n", ns, "get", "pods", "-l", "app=backend",
				"--field-selector=status.phase=Running", "-o", "jsonpath={.items[*].metadata.name}"))
		}
		endpointIPs := func() string {
			return mustKubectl(ctx, "-n", ns, "get", "endpoints", "backend-service", "-o", "jsonpath={.subsets[*].addresses[*].ip}")
		}
		Eventually(func() []string { return strings.Fields(endpointIPs()) }).WithTimeout(time.Minute).Should(HaveLen(2))

		curlAnswers := func(pod, url string) {
			GinkgoHelper()
			Eventually(func(g Gomega) {
				out, errOut, err := kubectl(ctx, "", "-n", ns, "exec", pod, "--", "curl", "-s", "--max-time", "5", url)
				g.Expect(err).NotTo(HaveOccurred(), out+errOut)
				g.Expect(out).To(ContainSubstring("backend-"))
			}).WithTimeout(time.Minute).WithPolling(2 * time.Second).Should(Succeed())
		}
		By("kubectl exec client -- curl the ClusterIP, the Service's name and its full name (cluster DNS)")
		curlAnswers("client", "http://"+clusterIP+":80/")
		curlAnswers("client", "http://backend-service")
		curlAnswers("client", "http://backend-service."+ns+".svc.cluster.local/")

		By("kubectl exec passes the exit code on")
		out, errOut, err = kubectl(ctx, "", "-n", ns, "exec", "client", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
		var exitErr *exec.ExitError
		Expect(errors.As(err, &exitErr)).To(BeTrue(), "%v: %s%s", err, out, errOut)
		Expect(exitErr.ExitCode()).To(Equal(3), out+errOut)
		Expect(out).To(Equal("out\n"))
		Expect(errOut).To(HavePrefix("err\n"))
		out, errOut, err = kubectl(ctx, "hello from stdin\n", "-n", ns, "exec", "-i", "client", "--", "cat")
		Expect(err).NotTo(HaveOccurred(), out+errOut)
		Expect(out).To(Equal("hello from stdin\n"))

		By("kubectl logs shows the echo server's log")
		pods := backends()
		Expect(pods).To(HaveLen(2))
		logs := mustKubectl(ctx, "-n", ns, "logs", pods[0])
		Expect(logs).To(ContainSubstring("Echo server listening"))
		Expect(logs).NotTo(ContainSubstring("lab kubelet: starting"), "the kubelet's own markers are not the container's log")
		out, errOut, err = kubectl(ctx, "", "-n", ns, "logs", pods[0], "--previous")
		Expect(err).To(HaveOccurred(), "a container that never restarted has no previous log:\n%s", out)
		Expect(errOut).To(ContainSubstring("previous terminated container"))

		By("kubectl port-forward svc/backend-service answers on the host's loopback")
		portForwardAnswers(ctx, ns, "svc/backend-service", 80)

		By("a deleted pod is replaced; endpoints follow, the ClusterIP stays, exec and logs reach the new pod")
		before := endpointIPs()
		// kubectl logs -f follows the container until it stops.
		follow := exec.CommandContext(ctx, theLab.Kubectl(), "-n", ns, "logs", "-f", pods[0])
		follow.Env = append(os.Environ(), "KUBECONFIG="+theLab.Kubeconfig())
		followed := gbytes.NewBuffer()
		follow.Stdout, follow.Stderr = followed, followed
		Expect(follow.Start()).To(Succeed())
		followDone := make(chan error, 1)
		go func() { followDone <- follow.Wait() }()
		Eventually(followed).WithTimeout(30 * time.Second).Should(gbytes.Say("Echo server listening"))
		mustKubectl(ctx, "-n", ns, "delete", "pod", pods[0], "--wait=true", "--timeout=2m")
		Eventually(followDone).WithTimeout(30*time.Second).Should(Receive(), "kubectl logs -f did not end with its container")
		// The echo server logs SIGTERM at once; the lab's short grace period may kill it before it logs its stop.
		Expect(string(followed.Contents())).To(ContainSubstring("Shutdown requested"), "the container's last words, followed")
		mustKubectl(ctx, "-n", ns, "rollout", "status", "deployment/backend", "--timeout=3m")
		Eventually(func(g Gomega) {
			ips := strings.Fields(endpointIPs())
			g.Expect(ips).To(HaveLen(2))
			g.Expect(ips).NotTo(ConsistOf(strings.Fields(before)))
		}).WithTimeout(time.Minute).Should(Succeed())
		Expect(mustKubectl(ctx, "-n", ns, "get", "service", "backend-service", "-o", "jsonpath={.spec.clusterIP}")).To(Equal(clusterIP))
		var fresh string
		for _, p := range backends() {
			if p != pods[0] && p != pods[1] {
				fresh = p
			}
		}
		Expect(fresh).NotTo(BeEmpty(), "no new backend pod")
		curlAnswers(fresh, "http://backend-service")
		By("a pod started after the Service has its environment variables")
		Expect(mustKubectl(ctx, "-n", ns, "exec", fresh, "--", "sh", "-c", "echo $BACKEND_SERVICE_SERVICE_HOST")).To(Equal(clusterIP))
		Expect(mustKubectl(ctx, "-n", ns, "exec", fresh, "--", "sh", "-c", "echo $BACKEND_SERVICE_PORT")).To(Equal("tcp://" + clusterIP + ":80"))
		Expect(mustKubectl(ctx, "-n", ns, "logs", fresh)).To(ContainSubstring("Echo server listening"))
		portForwardAnswers(ctx, ns, "pod/"+fresh, 8080)
		out, _, err = kubectl(ctx, "", "-n", ns, "exec", pods[0], "--", "true")
		Expect(err).To(HaveOccurred(), "exec into the deleted pod:\n%s", out)
	})
}

// portForwardAnswers runs `kubectl port-forward TARGET LOCAL:PORT` and sends an HTTP request to the local end.
func portForwardAnswers(ctx context.Context, ns, target string, port int) {
	GinkgoHelper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	local := l.Addr().(*net.TCPAddr).Port
	Expect(l.Close()).To(Succeed())
	pfCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(pfCtx, theLab.Kubectl(), "-n", ns, "port-forward", target, fmt.Sprintf("%d:%d", local, port))
	cmd.Env = append(os.Environ(), "KUBECONFIG="+theLab.Kubeconfig())
	stdout, err := cmd.StdoutPipe()
	Expect(err).NotTo(HaveOccurred())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	Expect(cmd.Start()).To(Succeed())
	defer func() { _ = cmd.Wait() }()
	defer cancel()
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "Forwarding from 127.0.0.1") {
				ready <- sc.Text()
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	Eventually(ready).WithTimeout(30*time.Second).Should(Receive(), "kubectl port-forward %s: %s", target, &stderr)
	hc := &http.Client{Timeout: 10 * time.Second}
	for range 3 { // several connections through one port-forward
		resp, err := hc.Get(fmt.Sprintf("http://127.0.0.1:%d/", local))
		Expect(err).NotTo(HaveOccurred(), "through kubectl port-forward %s: %s", target, &stderr)
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(http.StatusOK))
		Expect(string(body)).To(ContainSubstring("backend-"))
	}
}
