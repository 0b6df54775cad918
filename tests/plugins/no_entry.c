/* A valid shared library that does not export zctl_sink_plugin_entry (the linker version script
 * hides everything else, so it exports nothing at all). */
#include <zctl/sink.h>

int zctl_test_no_entry_answer(void);
int zctl_test_no_entry_answer(void) { return 42; }
