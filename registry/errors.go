package registry

import "errors"

// ErrNotFound is returned by the changes of one device (SetEnabled, Grant,
// Ungrant, Rotate, Remove) when the registry has no device of that id.
var ErrNotFound = errors.New("no such device in the registry")

// ErrExists is returned by Add when the registry already has a device of
// that id.
var ErrExists = errors.New("the device is already in the registry")
