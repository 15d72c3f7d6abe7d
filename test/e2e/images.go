package e2e

import "strings"

// The Dockerfile's targets (checked against the Dockerfile by TestDockerfileTargets): the product image, IMG,
// with /operator and /agent, and the test image, E2E_LAB_IMG, with /labvm, the echo server and client the
// scenarios' pods run. The product never carries test code, so the suite builds and loads both.
const (
	productTarget = "product"
	labTarget     = "lab"
	// labvmPath is where the test image holds the echo server and client.
	labvmPath = "/labvm"
)

// labImageFor is the default test image for a product image: the same reference with "-lab" appended to
// its repository, "ghcr.io/ipvs-operator/ipvs-operator:v0.1.0" -> "ghcr.io/ipvs-operator/ipvs-operator-lab:v0.1.0".
func labImageFor(image string) string {
	slash := strings.LastIndex(image, "/")
	i := strings.IndexAny(image[slash+1:], ":@")
	if i < 0 {
		return image + "-lab"
	}
	i += slash + 1
	return image[:i] + "-lab" + image[i:]
}
