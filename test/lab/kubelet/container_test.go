package kubelet

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestClassifyImage(t *testing.T) {
	mappings := []ImageMapping{{Match: "ipvs-operator/", Dir: "/mnt/host/bin"}}
	cases := []struct {
		image    string
		wantKind containerKind
		wantDir  string
	}{
		{"ghcr.io/ipvs-operator/ipvs-operator:v0.1.0", kindMappedBinary, "/mnt/host/bin"},
		{"ipvs-operator/agent:lab", kindMappedBinary, "/mnt/host/bin"},
		{"ipvs-operator/echo:lab", kindEcho, ""},
		{"ghcr.io/ipvs-operator/echo@sha256:abc", kindEcho, ""},
		{"registry.k8s.io/e2e-test-images/agnhost:2.53", kindEcho, ""},
		{"nginx", kindEcho, ""},
	}
	for _, c := range cases {
		kind, m := classifyImage(c.image, "echo", mappings)
		if dir := m.Dir; kind != c.wantKind || dir != c.wantDir {
			t.Errorf("classifyImage(%q) = %v %q, want %v %q", c.image, kind, m.Dir, c.wantKind, c.wantDir)
		}
	}
}

func TestImageRepository(t *testing.T) {
	cases := map[string]string{
		"ghcr.io/ipvs-operator/echo:v1":       "echo",
		"localhost:5000/x/echo-server:latest": "echo-server",
		"nginx":                               "nginx",
		"a/b@sha256:0123":                     "b",
	}
	for in, want := range cases {
		if got := imageRepository(in); got != want {
			t.Errorf("imageRepository(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEchoArgvFromPorts(t *testing.T) {
	c := &corev1.Container{Ports: []corev1.ContainerPort{
		{ContainerPort: 8080}, {ContainerPort: 80, Protocol: corev1.ProtocolTCP},
		{ContainerPort: 53, Protocol: corev1.ProtocolUDP}, {ContainerPort: 9999, Protocol: corev1.ProtocolSCTP},
	}}
	tcp, udp, sctp := echoPorts(c)
	if !reflect.DeepEqual(tcp, []int{80, 8080}) || !reflect.DeepEqual(udp, []int{53}) || !reflect.DeepEqual(sctp, []int{9999}) {
		t.Fatalf("echoPorts = %v %v %v", tcp, udp, sctp)
	}
	got := echoArgv("/mnt/host/bin/labvm", "web-0", tcp, udp, sctp)
	want := []string{"/mnt/host/bin/labvm", "echo", "--name", "web-0", "--tcp", "80,8080", "--udp", "53", "--sctp", "9999"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("echoArgv = %q", got)
	}
	if got := echoArgv("labvm", "client", nil, nil, nil); !reflect.DeepEqual(got, []string{"labvm", "echo", "--name", "client"}) {
		t.Errorf("echoArgv without ports = %q", got)
	}
}

func TestMappedArgv(t *testing.T) {
	vars := map[string]string{"NODE_NAME": "node-a"}
	cases := []struct {
		name    string
		c       corev1.Container
		want    []string
		wantErr bool
	}{
		{"command and args", corev1.Container{Command: []string{"/agent", "--zap-devel"}, Args: []string{"--node=$(NODE_NAME)"}},
			[]string{"/mnt/host/bin/agent", "--zap-devel", "--node=node-a"}, false},
		{"deep path", corev1.Container{Command: []string{"/usr/local/bin/operator"}},
			[]string{"/mnt/host/bin/operator"}, false},
		{"no command", corev1.Container{Name: "x", Args: []string{"--a"}}, nil, true},
	}
	for _, c := range cases {
		got, err := mappedArgv(ImageMapping{Dir: "/mnt/host/bin"}, &c.c, vars)
		if (err != nil) != c.wantErr || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: mappedArgv = %q, %v", c.name, got, err)
		}
	}
}

func TestNames(t *testing.T) {
	pod := &corev1.Pod{}
	pod.Namespace, pod.Name, pod.UID = "default", "web-0", "u1"
	if got := netnsName("pod-", pod); got != "pod-default-web-0" {
		t.Errorf("netnsName = %q", got)
	}
	if v := hostVethName("pod-default-web-0"); len(v) != 15 || v[:4] != "veth" || v != hostVethName("pod-default-web-0") {
		t.Errorf("hostVethName = %q", v)
	}
	if hostVethName("pod-a-b") == hostVethName("pod-a-c") {
		t.Error("hostVethName collides for different pods")
	}
	if got := containerLogPath("/logs", pod, "app"); got != "/logs/default_web-0_app.log" {
		t.Errorf("containerLogPath = %q", got)
	}
}
