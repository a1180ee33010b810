// Package bootstrap is an LwM2M bootstrap server (LwM2M 1.1 Core §5.2,
// §6.1): it answers a device's Bootstrap-Request and writes the LwM2M
// server accounts the device is to use.
package bootstrap
