/*
 * zctl sink plugin ABI (C99).
 *
 * A sink plugin is a shared library that exports one function,
 * ZCTL_SINK_ENTRY_SYMBOL, returning a pointer to a static zctl_sink_plugin
 * descriptor. The host (zctl serve) loads it at run time, checks the
 * descriptor, and drives every sink instance from that sink's own worker
 * thread.
 *
 * Versioning
 *   - The descriptor starts with its own size and the ABI version the plugin
 *     was built against. The host refuses a plugin whose abi_major differs from
 *     its own, or whose abi_minor is newer than its own.
 *   - Structs only grow at the end; readers check struct_size before touching
 *     a field added in a later minor version. New functions are appended.
 *
 * Memory ownership
 *   - Everything the host passes in (config JSON, batches, event bytes, the
 *     host API) is owned by the host and valid only for the duration of the
 *     call, except `host` given to create(), which lives until destroy()
 *     returns.
 *   - Everything the plugin returns (descriptor, strings in it) is owned by
 *     the plugin and must stay valid while the library is loaded.
 *   - Error and reason text is written by the plugin into a host-owned buffer
 *     of the given capacity, NUL-terminated and truncated if needed.
 *
 * Threads
 *   - validate_config may run on any host thread, concurrently with anything.
 *   - create, emit, flush, health, reopen and destroy of one instance are
 *     never called concurrently; after a successful create, all of them run
 *     on that instance's own worker thread (a first create may run on the
 *     host's start-up thread). Different instances run concurrently on
 *     different threads, so shared plugin state needs its own locking.
 *   - host->complete may be called from any thread, exactly once per batch
 *     for which emit returned ZCTL_SINK_PENDING, and before destroy returns.
 *
 * No C++ exception may cross this boundary; the C++ helper in sink.hpp
 * catches them at the boundary.
 */
#ifndef ZCTL_SINK_H
#define ZCTL_SINK_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ZCTL_SINK_ABI_MAJOR 1
#define ZCTL_SINK_ABI_MINOR 1

/* Name of the exported entry function. */
#define ZCTL_SINK_ENTRY_SYMBOL "zctl_sink_plugin_entry"

#if defined(_WIN32)
#define ZCTL_SINK_EXPORT __declspec(dllexport)
#else
#define ZCTL_SINK_EXPORT __attribute__((visibility("default")))
#endif

/* Result of a call. Returned as int32_t so an unknown value from a broken
 * plugin can be detected and treated as a failure instead of being trusted. */
enum {
  ZCTL_SINK_OK = 0,      /* done: the batch is delivered */
  ZCTL_SINK_RETRY = 1,   /* transient failure: the host retries the same batch */
  ZCTL_SINK_REJECT = 2,  /* permanent failure: the host never retries it */
  ZCTL_SINK_PENDING = 3  /* emit only: the plugin calls host->complete later */
};

/* Log levels for host->log. */
enum {
  ZCTL_SINK_LOG_DEBUG = 0,
  ZCTL_SINK_LOG_INFO = 1,
  ZCTL_SINK_LOG_WARN = 2,
  ZCTL_SINK_LOG_ERROR = 3
};

/* Capability bits in zctl_sink_plugin.capabilities. */
#define ZCTL_SINK_CAP_ASYNC_COMPLETION 0x1u /* emit may return ZCTL_SINK_PENDING */
#define ZCTL_SINK_CAP_REOPEN 0x2u           /* reopen() is meaningful (files) */
/* Since ABI 1.1, with ZCTL_SINK_CAP_ASYNC_COMPLETION: emit may be called again
 * while earlier batches are still pending (the host keeps a few in flight),
 * and their completions may arrive in any order. */
#define ZCTL_SINK_CAP_PIPELINE 0x4u

/* One event. `json` is the complete event object, exactly the bytes every sink
 * and `zctl watch -o json` receive; it is not NUL-terminated.
 * This struct is an array element with no size field: it is frozen for ABI
 * major 1 and never grows. */
typedef struct zctl_sink_event {
  const char* json;
  uint32_t json_len;
  uint32_t reserved0;
  uint64_t seq;
  const char* event_namespace; /* NUL-terminated, e.g. "connection" */
  const char* event_type;      /* NUL-terminated, e.g. "stray" */
} zctl_sink_event;

typedef struct zctl_sink_batch {
  uint32_t struct_size;
  uint32_t count;
  const zctl_sink_event* events;
  uint64_t batch_id; /* unique per instance; echoed in host->complete */
  uint32_t attempt;  /* 1 for the first delivery, 2 for the first retry, ... */
  uint32_t reserved0;
} zctl_sink_batch;

/* Filled by emit/flush when they do not return ZCTL_SINK_OK. */
typedef struct zctl_sink_status {
  uint32_t struct_size;
  uint32_t retry_after_ms; /* ZCTL_SINK_RETRY: earliest retry; 0 = host decides */
  char* reason;            /* host-owned buffer */
  uint32_t reason_cap;     /* its capacity including the NUL */
  uint32_t reserved0;
} zctl_sink_status;

/* Services the host offers an instance. Valid from create() until destroy()
 * returns. */
typedef struct zctl_sink_host {
  uint32_t struct_size;
  uint32_t reserved0;
  void* ctx; /* pass back as the first argument */
  /* Any thread. `msg` is copied before return. */
  void (*log)(void* ctx, int32_t level, const char* msg);
  /* Any thread, once per pending batch. `reason` may be NULL; it is copied. */
  void (*complete)(void* ctx, uint64_t batch_id, int32_t result, uint32_t retry_after_ms,
                   const char* reason);
} zctl_sink_host;

typedef struct zctl_sink_plugin {
  uint32_t struct_size; /* sizeof(zctl_sink_plugin) as the plugin was built */
  uint16_t abi_major;   /* ZCTL_SINK_ABI_MAJOR as the plugin was built */
  uint16_t abi_minor;   /* ZCTL_SINK_ABI_MINOR as the plugin was built */
  const char* name;     /* short, [a-z0-9_-]+; what `plugin:` in the config names */
  const char* version;  /* the plugin's own version, free text */
  const char* description;
  const char* config_schema; /* optional JSON Schema of the config, or NULL */
  uint32_t capabilities;     /* ZCTL_SINK_CAP_* bits */
  uint32_t reserved0;

  /* Required. Checks a config without side effects. Returns ZCTL_SINK_OK or
   * ZCTL_SINK_REJECT with a message in err. */
  int32_t (*validate_config)(const char* config_json, char* err, uint32_t err_cap);

  /* Required. Creates an instance. Returns ZCTL_SINK_OK and sets *instance,
   * or ZCTL_SINK_RETRY (e.g. a resource not there yet; the host tries again
   * later) / ZCTL_SINK_REJECT (the config cannot work) with a message in err. */
  int32_t (*create)(const char* config_json, const zctl_sink_host* host, void** instance,
                    char* err, uint32_t err_cap);

  /* Required. Delivers a batch. Returns OK, RETRY, REJECT (with status filled)
   * or, with ZCTL_SINK_CAP_ASYNC_COMPLETION, PENDING. The whole batch shares
   * one result: RETRY resends all of it (receivers dedupe on
   * event_src_id + seq).
   * PENDING: at most one batch is pending per instance; the host does not
   * call emit again until host->complete arrives for it (or the host's
   * call_timeout passes, after which the batch is retried and a late
   * complete for it is ignored) -- unless the plugin declares
   * ZCTL_SINK_CAP_PIPELINE, in which case a few batches may be pending at
   * once, each with its own batch_id and its own complete. complete may be called from any thread,
   * even before emit returns, but not from inside destroy after it returned. */
  int32_t (*emit)(void* instance, const zctl_sink_batch* batch, zctl_sink_status* status);

  /* Optional (NULL): makes buffered data durable within timeout_ms. */
  int32_t (*flush)(void* instance, uint32_t timeout_ms, zctl_sink_status* status);

  /* Optional (NULL = always healthy): OK when healthy, else RETRY with a
   * reason in status. */
  int32_t (*health)(void* instance, zctl_sink_status* status);

  /* Optional (NULL): reopen files or connections (SIGHUP, log rotation). */
  int32_t (*reopen)(void* instance, zctl_sink_status* status);

  /* Required. Frees the instance. After it returns the plugin must not call
   * the host any more. */
  void (*destroy)(void* instance);
} zctl_sink_plugin;

/* The entry point every plugin exports. Must be cheap and side-effect free. */
typedef const zctl_sink_plugin* (*zctl_sink_entry_fn)(void);
ZCTL_SINK_EXPORT const zctl_sink_plugin* zctl_sink_plugin_entry(void);

#ifdef __cplusplus
}
#endif

#endif /* ZCTL_SINK_H */
