// Package benchtools holds small programs used only by scripts/bench-*.sh to
// measure firehose against the ceilings of the machine it runs on; they are
// not part of the product.
package benchtools
