/* Exports the entry point, but it returns NULL: the host must report it, not crash. */
#include <zctl/sink.h>

#include <stddef.h>

ZCTL_SINK_EXPORT const zctl_sink_plugin* zctl_sink_plugin_entry(void);
const zctl_sink_plugin* zctl_sink_plugin_entry(void) { return NULL; }
