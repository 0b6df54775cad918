/* Shared by the deliberately broken test plugins: a minimal, otherwise valid C sink whose
 * descriptor each plugin bends in exactly one way. Plain C99 on purpose. */
#ifndef ZCTL_TEST_STUB_PLUGIN_H
#define ZCTL_TEST_STUB_PLUGIN_H

#include <zctl/sink.h>

#include <stddef.h>

static int32_t stub_validate(const char* config_json, char* err, uint32_t err_cap) {
  (void)config_json;
  if (err != NULL && err_cap > 0) err[0] = '\0';
  return ZCTL_SINK_OK;
}

static int stub_instance;

static int32_t stub_create(const char* config_json, const zctl_sink_host* host, void** instance,
                           char* err, uint32_t err_cap) {
  (void)config_json;
  (void)host;
  (void)err;
  (void)err_cap;
  *instance = &stub_instance;
  return ZCTL_SINK_OK;
}

#ifndef STUB_NO_EMIT
static int32_t stub_emit(void* instance, const zctl_sink_batch* batch, zctl_sink_status* status) {
  (void)instance;
  (void)batch;
  (void)status;
  return ZCTL_SINK_OK;
}
#endif

static void stub_destroy(void* instance) { (void)instance; }

/* A descriptor literal; flush, health and reopen are left NULL (all optional). */
#define STUB_DESCRIPTOR(size, major, minor, name, emit_fn)                                  \
  {                                                                                         \
    (size), (major), (minor), (name), "0.0.1", "zctl test plugin: " name, NULL, 0, 0,       \
        stub_validate, stub_create, (emit_fn), NULL, NULL, NULL, stub_destroy               \
  }

/* The entry point, declared so -Wmissing-prototypes stays quiet. */
ZCTL_SINK_EXPORT const zctl_sink_plugin* zctl_sink_plugin_entry(void);

#endif
