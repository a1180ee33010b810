//go:build !race

package lwm2m

// ioSync is for the race detector only (see iosync_race.go).
type ioSync struct{}

func (*ioSync) sent()     {}
func (*ioSync) received() {}
