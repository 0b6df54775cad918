/* Claims a descriptor of 8 bytes (size and version only): too small to hold the functions the
 * host needs, so the host must refuse it rather than read past the declared size. */
#include "stub_plugin.h"

static const zctl_sink_plugin descriptor =
    STUB_DESCRIPTOR(8, ZCTL_SINK_ABI_MAJOR, ZCTL_SINK_ABI_MINOR, "small_struct", stub_emit);

const zctl_sink_plugin* zctl_sink_plugin_entry(void) { return &descriptor; }
