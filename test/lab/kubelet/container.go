package kubelet

import (
	"context"
	"fmt"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
)

// containerKind says what the lab runs for a container image.
type containerKind int

const (
	// kindEcho runs the echo server on the container's declared ports.
	kindEcho containerKind = iota
	// kindMappedBinary runs a local build of the project's binary named by the container's command.
	kindMappedBinary
)

// imageRepository is the last path element of an image reference without tag or digest:
// "ghcr.io/ipvs-operator/echo:v1" -> "echo".
func imageRepository(image string) string {
	if i := strings.IndexByte(image, '@'); i >= 0 {
		image = image[:i]
	}
	last := path.Base(image)
	if i := strings.IndexByte(last, ':'); i >= 0 {
		last = last[:i]
	}
	return last
}

// classifyImage decides what runs for image: the echo image (its repository name contains echoMatch) and
// every unmapped image run the echo server; an image containing a mapping's Match runs binaries from its Dir
// (the mapping is returned).
func classifyImage(image, echoMatch string, mappings []ImageMapping) (containerKind, ImageMapping) {
	if echoMatch != "" && strings.Contains(imageRepository(image), echoMatch) {
		return kindEcho, ImageMapping{}
	}
	for _, m := range mappings {
		if strings.Contains(image, m.Match) {
			return kindMappedBinary, m
		}
	}
	return kindEcho, ImageMapping{}
}

// echoPorts splits a container's declared ports by protocol (TCP when unset, as the API defaults it).
func echoPorts(c *corev1.Container) (tcp, udp, sctp []int) {
	for _, p := range c.Ports {
		switch p.Protocol {
		case corev1.ProtocolUDP:
			udp = append(udp, int(p.ContainerPort))
		case corev1.ProtocolSCTP:
			sctp = append(sctp, int(p.ContainerPort))
		default:
			tcp = append(tcp, int(p.ContainerPort))
		}
	}
	sort.Ints(tcp)
	sort.Ints(udp)
	sort.Ints(sctp)
	return tcp, udp, sctp
}

func joinInts(ports []int) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

// echoArgv is `labvm echo --name POD --tcp P,.. --udp P,.. --sctp P,..`.
func echoArgv(echoBinary, podName string, tcp, udp, sctp []int) []string {
	argv := []string{echoBinary, "echo", "--name", podName}
	if len(tcp) > 0 {
		argv = append(argv, "--tcp", joinInts(tcp))
	}
	if len(udp) > 0 {
		argv = append(argv, "--udp", joinInts(udp))
	}
	if len(sctp) > 0 {
		argv = append(argv, "--sctp", joinInts(sctp))
	}
	return argv
}

// mappedArgv is <dir>/<basename(command[0])> command[1:]... args..., with $(VAR) expanded as the kubelet does
// (command[0] itself for a mapping with an entrypoint);
// the command and args are the container's, completed from the image's entrypoint and cmd (see
// ImageMapping.commandLine).
func mappedArgv(m ImageMapping, c *corev1.Container, vars map[string]string) ([]string, error) {
	command, args := m.commandLine(c)
	if len(command) == 0 {
		return nil, fmt.Errorf("container %s has no command: the lab maps command[0] to a local binary", c.Name)
	}
	argv := []string{filepath.Join(m.Dir, path.Base(command[0]))}
	if m.Entrypoint != "" {
		// An upstream image: the VM's root stands in for its filesystem, with the entrypoint linked into it
		// (linkEntrypoints), so /agnhost and the image's shell tools (/bin/sh, sleep, dd) run as named.
		argv[0] = command[0]
	}
	for _, a := range append(append([]string{}, command[1:]...), args...) {
		argv = append(argv, expandVars(a, vars))
	}
	return argv, nil
}

// container is one container of a pod: its supervised process and its probe results.
type container struct {
	spec    corev1.Container
	kind    containerKind
	mapping ImageMapping // what a kindMappedBinary container runs
	sup     *supervisor
	log     logr.Logger
	// sidecar marks a restartable init container (restartPolicy Always): it keeps running beside the
	// containers, is restarted like them, and its readiness counts for the pod's.
	sidecar bool

	mu          sync.Mutex
	startupDone bool // no startup probe, or it has succeeded for the current process
	readinessOK bool // no readiness probe, or it passes for the current process
}

// resetForStart is called for each new process: probes start over, as with a new container.
func (c *container) resetForStart() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.startupDone = c.spec.StartupProbe == nil
	c.readinessOK = c.spec.ReadinessProbe == nil
}

func (c *container) snapshot(podUID string) containerSnapshot {
	st := c.sup.State()
	c.mu.Lock()
	started := st.Running && c.startupDone
	ready := started && c.readinessOK
	c.mu.Unlock()
	imageID := "lab://echo"
	if command, _ := c.mapping.commandLine(&c.spec); c.kind == kindMappedBinary && len(command) > 0 {
		imageID = "lab://" + filepath.Join(c.mapping.Dir, path.Base(command[0]))
	}
	return containerSnapshot{
		Name:        c.spec.Name,
		Image:       c.spec.Image,
		ImageID:     imageID,
		ContainerID: fmt.Sprintf("lab://%s-%s-%d", podUID, c.spec.Name, st.Restarts),
		Process:     st,
		Ready:       ready,
		Started:     started,
		Sidecar:     c.sidecar,
	}
}

// started reports whether the current process runs and is past its startup probe.
func (c *container) started() bool {
	running := c.sup.State().Running
	c.mu.Lock()
	defer c.mu.Unlock()
	return running && c.startupDone
}

// runProbes starts the container's probes for one process; they end with procCtx. Readiness and liveness
// wait for the startup probe; a failing liveness or startup probe kills the process, which the supervisor
// restarts.
func (c *container) runProbes(procCtx context.Context, target probeTarget, changed func()) {
	gate := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.startupDone
	}
	var wg sync.WaitGroup
	if p := c.spec.StartupProbe; p != nil {
		startupCtx, stop := context.WithCancel(procCtx)
		wg.Go(func() {
			state := newProbeState(p, false)
			probeLoop(startupCtx, p, target, state, nil, func(ok, _ bool, err error) {
				if ok {
					c.mu.Lock()
					c.startupDone = true
					c.mu.Unlock()
					stop() // a startup probe stops once it has succeeded
					changed()
					return
				}
				// A startup probe starts failed, so it never flips to failure: count attempts instead.
				if state.failures >= state.failureThreshold {
					state.failures = 0
					c.sup.Kill("startup probe failed: " + errString(err))
				}
			})
		})
	}
	if p := c.spec.ReadinessProbe; p != nil {
		wg.Go(func() {
			probeLoop(procCtx, p, target, newProbeState(p, false), gate, func(ok, flipped bool, err error) {
				if !flipped {
					return
				}
				c.mu.Lock()
				c.readinessOK = ok
				c.mu.Unlock()
				c.log.Info("Readiness changed", "ready", ok, "probeError", errString(err))
				changed()
			})
		})
	}
	if p := c.spec.LivenessProbe; p != nil {
		wg.Go(func() {
			probeLoop(procCtx, p, target, newProbeState(p, true), gate, func(ok, flipped bool, err error) {
				if flipped && !ok {
					c.sup.Kill("liveness probe failed: " + errString(err))
				}
			})
		})
	}
	wg.Wait()
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
