package desired

import (
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// ErrInvalid is matched (errors.Is) by every error ForService returns: the Service or the Policy is
// malformed in a way the API server normally refuses, so retrying cannot help. The caller should keep the
// Service's previous kernel state and report the problem; errors.As with *field.Error gives the field.
var ErrInvalid = errors.New("invalid Service")

func invalid(path *field.Path, value any, detail string) error {
	return fmt.Errorf("%w: %w", ErrInvalid, field.Invalid(path, value, detail))
}
