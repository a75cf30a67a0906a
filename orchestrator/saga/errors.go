package saga

import "errors"

// Errors of a saga definition. Each error returned by Definition.Validate,
// ParseYAML and ParseJSON wraps ErrInvalidDefinition and, where one applies,
// one of the more precise sentinels below; its text names the step and the
// field at fault.
var (
	// ErrInvalidDefinition is wrapped by every definition error.
	ErrInvalidDefinition = errors.New("natstx saga: invalid definition")
	// ErrNoSteps is returned for a definition without steps.
	ErrNoSteps = errors.New("natstx saga: no steps")
	// ErrDuplicateStep is returned when two steps have the same name.
	ErrDuplicateStep = errors.New("natstx saga: step named twice")
	// ErrUnknownDependency is returned when a step depends on a name that is
	// not a step of the definition.
	ErrUnknownDependency = errors.New("natstx saga: unknown dependency")
	// ErrCycle is returned when the dependencies form a cycle.
	ErrCycle = errors.New("natstx saga: dependency cycle")
	// ErrPivot is returned for more than one pivot, or a pivot that some step
	// runs in parallel with (see Step.Pivot).
	ErrPivot = errors.New("natstx saga: bad pivot")
	// ErrBadPolicy is returned for a retry, timeout, deadline or stuck setting
	// out of range.
	ErrBadPolicy = errors.New("natstx saga: bad policy")
)

// ErrBadRecord is returned by Recover for a record that is not consistent
// with its own definition (a step missing or unknown, a status out of range).
var ErrBadRecord = errors.New("natstx saga: bad record")
