/* Built against an ABI major the host does not speak: the host must refuse to load it. */
#include "stub_plugin.h"

static const zctl_sink_plugin descriptor =
    STUB_DESCRIPTOR(sizeof(zctl_sink_plugin), ZCTL_SINK_ABI_MAJOR + 1, ZCTL_SINK_ABI_MINOR,
                    "abi_major", stub_emit);

const zctl_sink_plugin* zctl_sink_plugin_entry(void) { return &descriptor; }
