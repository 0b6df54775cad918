"""The sink plugin C ABI (sdk/include/zctl/sink.h) for ctypes, so a test can load a plugin
from the build and call it directly, as the host would."""

import ctypes
import os


class Host(ctypes.Structure):
    LOG = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int32, ctypes.c_char_p)
    COMPLETE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int32, ctypes.c_uint32,
                                ctypes.c_char_p)
    _fields_ = [("struct_size", ctypes.c_uint32), ("reserved0", ctypes.c_uint32), ("ctx", ctypes.c_void_p),
                ("log", LOG), ("complete", COMPLETE)]


class Event(ctypes.Structure):
    _fields_ = [("json", ctypes.c_char_p), ("json_len", ctypes.c_uint32), ("reserved0", ctypes.c_uint32),
                ("seq", ctypes.c_uint64), ("event_namespace", ctypes.c_char_p), ("event_type", ctypes.c_char_p)]


class BatchT(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("count", ctypes.c_uint32), ("events", ctypes.POINTER(Event)),
                ("batch_id", ctypes.c_uint64), ("attempt", ctypes.c_uint32), ("reserved0", ctypes.c_uint32)]


class StatusT(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("retry_after_ms", ctypes.c_uint32), ("reason", ctypes.c_char_p),
                ("reason_cap", ctypes.c_uint32), ("reserved0", ctypes.c_uint32)]


class Plugin(ctypes.Structure):
    _fields_ = [("struct_size", ctypes.c_uint32), ("abi_major", ctypes.c_uint16), ("abi_minor", ctypes.c_uint16),
                ("name", ctypes.c_char_p), ("version", ctypes.c_char_p), ("description", ctypes.c_char_p),
                ("config_schema", ctypes.c_char_p), ("capabilities", ctypes.c_uint32), ("reserved0", ctypes.c_uint32),
                ("validate_config", ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint32)),
                ("create", ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_char_p, ctypes.POINTER(Host),
                                            ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_uint32)),
                ("emit", ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.POINTER(BatchT),
                                          ctypes.POINTER(StatusT))),
                ("flush", ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_uint32, ctypes.POINTER(StatusT))),
                ("health", ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.POINTER(StatusT))),
                ("reopen", ctypes.c_void_p),
                ("destroy", ctypes.CFUNCTYPE(None, ctypes.c_void_p))]


def load_plugin(name):
    """The descriptor of <plugin dir>/<name>.so; the library stays loaded while it is used."""
    directory = os.environ.get("ZCTL_PLUGIN_DIR") or os.path.join(os.environ.get("ZCTL_BUILD_DIR", "build"), "lib",
                                                                  "zctl", "plugins")
    lib = ctypes.CDLL(os.path.join(directory, f"{name}.so"))
    lib.zctl_sink_plugin_entry.restype = ctypes.POINTER(Plugin)
    plugin = lib.zctl_sink_plugin_entry().contents
    plugin._lib = lib
    return plugin
