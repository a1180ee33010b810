//go:build race

package reliability_test

// The race detector slows request handling about tenfold; the flood test
// scales down so the folder stays within a few minutes under -race.
const raceEnabled = true
