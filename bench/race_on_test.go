//go:build race

package bench_test

// The race detector multiplies memory and time; scale tests shrink under it.
const raceEnabled = true
