/* Compile test: sink.h must be valid, warning-free C99 (built with -std=c99 -Wall -Wextra
 * -pedantic -Werror as part of the zctl_sdk_c_check target). Also a minimal C plugin. */
#include <zctl/sink.h>

#include <stddef.h>
#include <string.h>

/* The fixed head every host reads before anything else: size, then the ABI version. */
typedef char check_plugin_head[offsetof(zctl_sink_plugin, abi_minor) == 6 ? 1 : -1];
typedef char check_abi_major[ZCTL_SINK_ABI_MAJOR >= 1 ? 1 : -1];

static int32_t check_validate(const char* config_json, char* err, uint32_t err_cap) {
  (void)config_json;
  if (err != NULL && err_cap > 0) err[0] = '\0';
  return ZCTL_SINK_OK;
}

static int32_t check_create(const char* config_json, const zctl_sink_host* host, void** instance,
                            char* err, uint32_t err_cap) {
  (void)config_json;
  (void)err;
  (void)err_cap;
  *instance = (void*)host;
  return ZCTL_SINK_OK;
}

static int32_t check_emit(void* instance, const zctl_sink_batch* batch, zctl_sink_status* status) {
  uint32_t i;
  uint64_t bytes = 0;
  (void)instance;
  for (i = 0; i < batch->count; ++i) bytes += batch->events[i].json_len;
  if (bytes == 0 && status->reason != NULL && status->reason_cap > 0) {
    strncpy(status->reason, "empty batch", status->reason_cap - 1);
    status->reason[status->reason_cap - 1] = '\0';
    return ZCTL_SINK_REJECT;
  }
  return ZCTL_SINK_OK;
}

static void check_destroy(void* instance) { (void)instance; }

static const zctl_sink_plugin check_descriptor = {
    sizeof(zctl_sink_plugin),
    ZCTL_SINK_ABI_MAJOR,
    ZCTL_SINK_ABI_MINOR,
    "c_check",
    "0.0.0",
    "C99 compile check",
    NULL,
    ZCTL_SINK_CAP_REOPEN,
    0,
    check_validate,
    check_create,
    check_emit,
    NULL,
    NULL,
    NULL,
    check_destroy,
};

const zctl_sink_plugin* zctl_sink_plugin_entry(void);
ZCTL_SINK_EXPORT const zctl_sink_plugin* zctl_sink_plugin_entry(void) { return &check_descriptor; }

/* The entry point has exactly the type the host looks up. */
extern const zctl_sink_entry_fn zctl_sdk_c_check_entry_type;
const zctl_sink_entry_fn zctl_sdk_c_check_entry_type = zctl_sink_plugin_entry;
