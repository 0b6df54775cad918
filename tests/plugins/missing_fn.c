/* A required function (emit) is NULL: the host must refuse the plugin at load time. */
#define STUB_NO_EMIT
#include "stub_plugin.h"

static const zctl_sink_plugin descriptor =
    STUB_DESCRIPTOR(sizeof(zctl_sink_plugin), ZCTL_SINK_ABI_MAJOR, ZCTL_SINK_ABI_MINOR,
                    "missing_fn", NULL);

const zctl_sink_plugin* zctl_sink_plugin_entry(void) { return &descriptor; }

