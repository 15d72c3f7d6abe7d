package lab_test

import (
	"github.com/ipvs-operator/ipvs-operator/test/dataplane"
	"github.com/ipvs-operator/ipvs-operator/test/lab"
)

// The lab is a dataplane.Driver: the data-path scenarios run against it unchanged.
var _ dataplane.Driver = (*lab.Lab)(nil)
