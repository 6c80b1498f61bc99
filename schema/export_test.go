package schema

// ApplyUpTo applies the migrations up to version upTo, as an older release did.
var ApplyUpTo = apply
