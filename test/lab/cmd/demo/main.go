// Command demo shows ipvs-operator working end to end in the lab (`make demo`): it starts a real control plane
// and a VM with a real kernel, installs the operator from config/, serves a 3-replica Deployment through a
// ClusterIP Service with a least-connection ServicePolicy, and shows the kernel's IPVS table and real traffic.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	lbv1alpha1 "github.com/ipvs-operator/ipvs-operator/api/v1alpha1"
	"github.com/ipvs-operator/ipvs-operator/test/install"
	"github.com/ipvs-operator/ipvs-operator/test/lab"
)

const (
	ns       = "demo"
	appLabel = "backend"
)

func main() {
	keep := flag.Bool("keep", false, "keep the lab running at the end (Ctrl-C stops it)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "\ndemo FAILED:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("\n\033[1m==> "+format+"\033[0m\n", args...)
}

func run(ctx context.Context, keep bool) (err error) {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	t0 := time.Now()
	step("Starting the lab: control plane on 127.0.0.1, two nodes in a qemu VM with Debian's kernel (the first run builds a lot)")
	// With the cluster DNS, as a cluster has: CoreDNS behind kube-dns, which the agents will serve.
	l, err := lab.Start(ctx, lab.Options{RepoRoot: root, Out: os.Stdout, ClusterDNS: true})
	if err != nil {
		return err
	}
	defer func() {
		if keep && err == nil {
			step("The lab stays up: kubeconfig %s; Ctrl-C to stop", l.Kubeconfig())
			fmt.Printf("    e.g. KUBECONFIG=%s kubectl get svc,pods,svcpol -n %s\n", l.Kubeconfig(), ns)
			fmt.Printf("         go run ./test/lab/cmd/lab exec node-a ipvsadm -Ln   (with LAB_RUN_DIR=%s)\n", l.RunDir())
			<-ctx.Done()
		}
		step("Tearing down")
		if serr := l.Stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	fmt.Printf("    lab up in %s (%s)\n", time.Since(t0).Round(time.Second), l.Timings)
	c := l.Client()

	step("Installing the operator from config/ (kustomize build config/default, server-side apply); the lab runs no kube-proxy, so its agents serve every ClusterIP Service (scope all)")
	opts := lab.InstallOptions(root)
	opts.Log = os.Stdout
	if err := install.Kustomize(ctx, c, opts); err != nil {
		return err
	}
	if err := install.WaitReady(ctx, c, l.Nodes(), 3*time.Minute); err != nil {
		return err
	}
	fmt.Printf("    the operator is Available, rendered the agent DaemonSet, and an agent is Ready on %v\n", l.Nodes())

	step("Applying a 3-replica backend Deployment, a Service (80 -> 8080) and a ServicePolicy (scheduler lc)")
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); client.IgnoreAlreadyExists(err) != nil {
		return err
	}
	for _, obj := range objects() {
		if err := c.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating %T %s: %w", obj, obj.GetName(), err)
		}
	}
	client1 := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "client", Labels: map[string]string{"role": "client"}}, Spec: echoSpec()}
	client1.Spec.NodeName = l.Nodes()[1]
	if err := c.Create(ctx, client1); err != nil {
		return err
	}
	pods, err := waitReady(ctx, c, map[string]string{"app": appLabel}, 3)
	if err != nil {
		return err
	}
	if _, err := waitReady(ctx, c, map[string]string{"role": "client"}, 1); err != nil {
		return err
	}
	svc := &corev1.Service{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: appLabel}, svc); err != nil {
		return err
	}
	vip := svc.Spec.ClusterIP
	fmt.Printf("    Service %s/%s has ClusterIP %s; pods:\n", ns, appLabel, vip)
	for _, p := range pods {
		fmt.Printf("      %-32s %s on %s\n", p.Name, p.Status.PodIP, p.Spec.NodeName)
	}
	if err := waitTable(ctx, l, vip, pods); err != nil {
		return err
	}

	node := l.Nodes()[0]
	step("ipvsadm -Ln on %s", node)
	out, err := l.NodeExec(ctx, node, "ipvsadm", "-Ln")
	if err != nil {
		return err
	}
	fmt.Print(indent(out))

	step("30 requests from a client pod on %s to http://%s:80", l.Nodes()[1], vip)
	if err := spread(ctx, l, vip+":80", 30); err != nil {
		return err
	}
	step("5 requests by name, http://%s (the pod's resolv.conf names kube-dns; CoreDNS answers through IPVS too)", appLabel)
	if err := spread(ctx, l, appLabel+":80", 5); err != nil {
		return err
	}

	victim := pods[0]
	step("Deleting pod %s (%s): its real server is replaced, the ClusterIP stays", victim.Name, victim.Status.PodIP)
	if err := c.Delete(ctx, &victim); err != nil {
		return err
	}
	var fresh []corev1.Pod
	if err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		fresh, err = waitReady(ctx, c, map[string]string{"app": appLabel}, 3)
		if err != nil {
			return false, err
		}
		for _, p := range fresh {
			if p.Name == victim.Name {
				return false, nil
			}
		}
		return true, nil
	}); err != nil {
		return err
	}
	if err := waitTable(ctx, l, vip, fresh); err != nil {
		return err
	}
	out, err = l.NodeExec(ctx, node, "ipvsadm", "-Ln", "-t", vip+":80")
	if err != nil {
		return err
	}
	fmt.Print(indent(out))
	if err := c.Get(ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
		return err
	}
	fmt.Printf("    ClusterIP still %s\n", svc.Spec.ClusterIP)
	step("30 more requests: lc favours the new pod, which has no connections yet (IPVS counts the others' TIME_WAIT ones)")
	if err := spread(ctx, l, vip+":80", 30); err != nil {
		return err
	}
	step("Done in %s", time.Since(t0).Round(time.Second))
	return nil
}

// spread sends n requests from the client pod to addr and prints which pod answered each.
func spread(ctx context.Context, l *lab.Lab, addr string, n int) error {
	argv := append(l.ClientCommand(), "--count="+strconv.Itoa(n), addr)
	out, err := l.PodExec(ctx, types.NamespacedName{Namespace: ns, Name: "client"}, argv...)
	if err != nil {
		return fmt.Errorf("client: %w\n%s", err, out)
	}
	counts := map[string]int{}
	failed := 0
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 2 && f[0] == "OK":
			counts[f[1]]++
		case len(f) > 0 && f[0] == "ERR":
			failed++
		}
	}
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Printf("      %-32s %2d %s\n", n, counts[n], strings.Repeat("#", counts[n]))
	}
	fmt.Printf("    %d answered, %d failed\n", n-failed, failed)
	if failed > 0 {
		return fmt.Errorf("%d of %d requests failed", failed, n)
	}
	return nil
}

// waitTable waits until every node's virtual server for vip:80 has exactly the pods as real servers.
func waitTable(ctx context.Context, l *lab.Lab, vip string, pods []corev1.Pod) error {
	want := make([]string, len(pods))
	for i, p := range pods {
		want[i] = p.Status.PodIP + ":8080"
	}
	var last string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, n := range l.Nodes() {
			out, err := l.NodeExec(ctx, n, "ipvsadm", "-Sn")
			if err != nil {
				return false, nil //nolint:nilerr // keep polling
			}
			last = out
			for _, w := range want {
				if !strings.Contains(out, "-t "+vip+":80 -r "+w+" -m -w 1") {
					return false, nil
				}
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("the kernel did not get the real servers %v for %s: %w\nlast ipvsadm -Sn:\n%s", want, vip, err, last)
	}
	return nil
}

func waitReady(ctx context.Context, c client.Client, labels map[string]string, n int) ([]corev1.Pod, error) {
	var ready []corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		list := &corev1.PodList{}
		if err := c.List(ctx, list, client.InNamespace(ns), client.MatchingLabels(labels)); err != nil {
			return false, err
		}
		ready = ready[:0]
		for _, p := range list.Items {
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue && p.DeletionTimestamp == nil {
					ready = append(ready, p)
				}
			}
		}
		return len(ready) == n, nil
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for %d Ready pods %v: %w", n, labels, err)
	}
	sort.Slice(ready, func(i, j int) bool { return ready[i].Name < ready[j].Name })
	return ready, nil
}

func echoSpec() corev1.PodSpec {
	return corev1.PodSpec{
		TerminationGracePeriodSeconds: ptr.To[int64](2),
		Containers: []corev1.Container{{
			Name: "echo", Image: lab.EchoImage, Command: []string{"/labvm"}, Args: []string{"echo", "--tcp=8080"},
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			ReadinessProbe: &corev1.Probe{
				ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz", Port: intstr.FromInt32(8080)}},
				PeriodSeconds: 1,
			},
		}},
	}
}

func objects() []client.Object {
	labels := map[string]string{"app": appLabel}
	return []client.Object{
		&appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: appLabel},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](3),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: echoSpec()},
			},
		},
		&corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: appLabel, Labels: map[string]string{"app": appLabel}},
			Spec:       corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}},
		},
		&lbv1alpha1.ServicePolicy{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: appLabel},
			Spec: lbv1alpha1.ServicePolicySpec{
				Selector:  &metav1.LabelSelector{MatchLabels: labels},
				Scheduler: lbv1alpha1.SchedulerLeastConnection,
			},
		},
	}
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run the demo from inside the ipvs-operator checkout (make demo)")
		}
		dir = parent
	}
}
