// Package interop holds interoperability tests of the LwM2M client against
// independent implementations. It has no API; its tests drive external
// programs, which the tests find through environment variables:
//
//   - LWM2M_NODE_LIB_DIR: the folder whose node_modules/ holds
//     lwm2m-node-lib 1.4.0, as printed by .ci/install-nodelib.sh.
//
// A missing program skips its test locally and fails it when CI is set.
package interop
