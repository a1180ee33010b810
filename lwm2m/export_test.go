package lwm2m

import "context"

// ApplyProvisioning lets the external tests call applyProvisioning, as
// the bootstrap procedure does.
func ApplyProvisioning(ctx context.Context, c *Client, p Provisioning) error {
	return c.applyProvisioning(ctx, p)
}
