/* Built against a newer ABI minor than the host's: the host must refuse to load it. */
#include "stub_plugin.h"

static const zctl_sink_plugin descriptor =
    STUB_DESCRIPTOR(sizeof(zctl_sink_plugin), ZCTL_SINK_ABI_MAJOR, ZCTL_SINK_ABI_MINOR + 1,
                    "abi_minor", stub_emit);

const zctl_sink_plugin* zctl_sink_plugin_entry(void) { return &descriptor; }
