//go:build lab

package dataplane_test

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ipvs-operator/ipvs-operator/test/bench"
	"github.com/ipvs-operator/ipvs-operator/test/dataplane"
	"github.com/ipvs-operator/ipvs-operator/test/install"
	"github.com/ipvs-operator/ipvs-operator/test/lab"
)

// takeoverHooks runs kube-proxy in the lab's nodes with the scale harness's launcher, and installs the
// operator as the suite's BeforeSuite does. In ipvs mode, the last node's kube-proxy writes its chains with
// iptables-legacy, the others' with the guest's iptables-nft: the takeover must remove both kinds.
func takeoverHooks() dataplane.TakeoverHooks {
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		Fail(err.Error())
	}
	binary := filepath.Join(root, "bin", "k8s", "1.37.1", "kube-proxy")
	return dataplane.TakeoverHooks{
		StartKubeProxy: func(ctx context.Context, node, mode string) (func(context.Context) error, error) {
			nodes := theLab.Nodes()
			kp := bench.KubeProxy{Mode: mode, Binary: binary, Legacy: mode == "ipvs" && node == nodes[len(nodes)-1]}
			pid, err := kp.Start(ctx, theLab, node, 0)
			if err != nil {
				return nil, err
			}
			stopped := false
			return func(ctx context.Context) error {
				if stopped {
					return nil
				}
				stopped = true
				return kp.Stop(ctx, theLab, pid)
			}, nil
		},
		CleanupKubeProxy: func(ctx context.Context, node, mode string) error {
			nodes := theLab.Nodes()
			return bench.KubeProxy{Mode: mode, Binary: binary, Legacy: mode == "ipvs" && node == nodes[len(nodes)-1]}.Cleanup(ctx, theLab, node)
		},
		Install: func(ctx context.Context, args ...string) error {
			if err := namespaceGone(ctx, theLab.Client()); err != nil {
				return err
			}
			opts := lab.InstallOptions(root)
			opts.Args = append([]string{"--agent-audit-period=10s"}, args...)
			opts.Log = GinkgoWriter
			if err := install.Kustomize(ctx, theLab.Client(), opts); err != nil {
				return err
			}
			return install.WaitReady(ctx, theLab.Client(), theLab.Nodes(), 3*time.Minute)
		},
		Uninstall: func(ctx context.Context) error {
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: dataplane.AgentNamespace}}
			if err := client.IgnoreNotFound(theLab.Client().Delete(ctx, ns)); err != nil {
				return err
			}
			return namespaceGone(ctx, theLab.Client())
		},
	}
}

// namespaceGone waits until the operator's namespace, deleted by an uninstall, is gone: nothing can be
// created in it while it terminates.
func namespaceGone(ctx context.Context, c client.Client) error {
	err := wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		err := c.Get(ctx, client.ObjectKey{Name: dataplane.AgentNamespace}, &corev1.Namespace{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
	if err != nil {
		return fmt.Errorf("namespace %s still there: %w", dataplane.AgentNamespace, err)
	}
	return nil
}
