// Package campaign updates a fleet in waves: an Engine runs update
// campaigns on a server.Server, keeps them in the server's store, and
// serves them and their packages over the server's HTTP API.
//
// A campaign is a package, a target (an endpoint glob, and optionally the
// firmware version /3/0/3 or another resource a device must report), a
// delivery method, a rollout and a deadline. The rollout updates a canary
// group first, then waves of a count or a percentage of the devices, never
// more than Concurrency devices at once; a wave in which more than
// FailureThresholdPercent of the devices fail (an Update Result other than
// Success, or no outcome within the engine's DeviceTimeout) pauses the
// campaign until an operator resumes or aborts it.
//
// The devices of a campaign are the registered endpoints that match its
// glob when it is created; the firmware-version and resource conditions
// are checked on each device at its turn (a device that does not match is
// skipped). A device that is not registered, or does not answer, at its
// turn waits and is updated when it next registers, until the deadline.
//
// # Crash safety
//
// Each device's record is written to the store before its update starts.
// After a restart a device whose update had started is never updated
// again blindly: the engine reads its State (/5/0/3), Update Result
// (/5/0/5) and firmware version (/3/0/3) when it is registered, and
// records the outcome (Success, a failure, or an update still under way
// that it follows; a package downloaded but not yet applied is applied).
// Only a device that reports Idle with the Initial result, which the
// update never reached, is started again.
//
// # Success
//
// A device succeeds only when its Update Result reads Success (1), as
// server.Update reports it after following the device through its
// restart and registration.
package campaign
