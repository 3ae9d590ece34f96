"""Plugin-library hygiene: exported symbols, build info, built-in plugin names, int64 fields, and the logger ABI
(a library built with TensorRT 10.14 headers logging through a finder of TensorRT 11's layout)."""

from __future__ import annotations

import ctypes
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from opforge.build.plugin_build import ENTRY_POINTS
from opforge.build.trt_builtin_plugins import TRT_BUILTIN_PLUGIN_NAMES, is_trt_builtin_plugin
from opforge.core.errors import UsageError
from opforge.core.fields import PluginAttr, int64_text, parse_int64_text, parser_field, plugin_attrs
from opforge.generate import check_plugin_name


def _dynamic_symbols(lib: Path) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(lib)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["generated_cases", "generated_example"])
def test_library_exports_only_its_entry_points(fixture, request):
    for lib in request.getfixturevalue(fixture).libraries:
        assert _dynamic_symbols(lib) == set(ENTRY_POINTS), lib
        dyn = subprocess.run(["readelf", "--dyn-syms", "-W", str(lib)], capture_output=True, text=True).stdout
        assert "UNIQUE" not in dyn, f"{lib} has GNU-unique dynamic symbols"


@pytest.mark.slow
def test_library_records_the_headers_it_was_built_with(generated_example):
    from opforge.build.trt_headers import trt_headers_version

    major, minor, patch = trt_headers_version()
    text = generated_example.libraries[0].read_bytes()
    assert f"tensorrt-headers={major}.{minor}.{patch} ".encode() in text


def test_trt_builtin_plugin_names_are_refused():
    assert "EfficientNMS_TRT" in TRT_BUILTIN_PLUGIN_NAMES
    for name in ("EfficientNMS_TRT", "ScatterND_TRT_like_TRT", "GroupNormalizationPlugin"):
        assert is_trt_builtin_plugin(name)
        with pytest.raises(UsageError, match="built-in"):
            check_plugin_name(name, "n0")
    check_plugin_name("Compress_opf12345678", "n0")  # opforge's own names pass


def test_int64_attribute_is_written_as_text_not_narrowed():
    node = helper.make_node("Add", ["x", "c"], ["y"], name="add")
    attrs = plugin_attrs(node, {1: np.array([2**40, -3, 7], dtype=np.int64)}, 20)
    (big,) = attrs
    assert big.field_type == "kCHAR"
    assert big.int64_as_text
    attr = big.onnx_attribute()
    assert attr.type == onnx.AttributeProto.STRING
    name, ftype, data, length = parser_field(attr)
    assert (name, ftype) == (big.name, "kCHAR")
    assert parse_int64_text(data[:length].decode()) == [2**40, -3, 7]
    small = PluginAttr("axes", "ints", ints=(1, -1))
    assert small.field_type == "kINT32"
    assert small.onnx_attribute().type == onnx.AttributeProto.INTS


def test_int64_text_round_trip_and_rejects_garbage():
    rng = np.random.default_rng(17)
    values = [int(v) for v in rng.integers(-(2**62), 2**62, size=50)] + [2**63 - 1, -(2**63)]
    assert parse_int64_text(int64_text(values)) == values
    assert parse_int64_text("") == []
    for bad in ("1,,2", "1, 2", "0x10", "9223372036854775808", "-"):
        with pytest.raises(ValueError):
            parse_int64_text(bad)


def test_parser_field_follows_the_attribute_type_like_tensorrt():
    """INT/INTS -> kINT32 narrowed by truncation (no range check), FLOAT(S) -> kFLOAT32, STRING -> kCHAR."""
    _, ftype, data, n = parser_field(helper.make_attribute("k", [2**32 + 5, -1]))
    assert (ftype, n) == ("kINT32", 2)
    assert np.frombuffer(data, np.int32).tolist() == [5, -1]
    _, ftype, data, n = parser_field(helper.make_attribute("f", 0.1))
    assert (ftype, n) == ("kFLOAT32", 1)
    assert np.frombuffer(data, np.float32)[0] == np.float32(0.1)
    _, ftype, data, n = parser_field(helper.make_attribute("s", "linear"))
    assert (ftype, n, data) == ("kCHAR", 6, b"linear\0")


# A stand-in for TensorRT 11's side of setLoggerFinder: its ILoggerFinder and ILogger declared as in TensorRT 11.1's
# public headers (NvInferRuntime.h: both derive from IVersionedInterface), and, like libnvinfer 11, it exports
# getInferLibMajorVersion() == 11. The plugin interfaces come from the build's (10.14) headers: IPluginCreatorV3One
# and PluginField did not change between 10.14 and 11.1. A library built with 10.14 headers must log through this
# finder's layout; calling its 10.x slot 0 would call getAPILanguage() and lose the message.
_FAKE_TRT11 = r"""
#include <NvInferRuntime.h>
#include <dlfcn.h>
#include <cstring>
#include <string>
namespace trt11 {
struct InterfaceInfo { char const* kind; int32_t major; int32_t minor; };
class IVersionedInterface {
public:
    virtual int32_t getAPILanguage() const noexcept { return 0; }
    virtual InterfaceInfo getInterfaceInfo() const noexcept = 0;
    virtual ~IVersionedInterface() noexcept = default;
};
class ILogger : public IVersionedInterface {
public:
    InterfaceInfo getInterfaceInfo() const noexcept override { return {"ILogger", 1, 0}; }
    virtual void log(int32_t severity, char const* msg) noexcept = 0;
};
class ILoggerFinder : public IVersionedInterface {
public:
    InterfaceInfo getInterfaceInfo() const noexcept override { return {"ILoggerFinder", 1, 0}; }
    virtual ILogger* findLogger() = 0;
};
} // namespace trt11
std::string gMessages;
struct Logger final : trt11::ILogger {
    void log(int32_t severity, char const* msg) noexcept override {
        gMessages += std::to_string(severity) + ":" + msg + "\n";
    }
};
struct Finder final : trt11::ILoggerFinder {
    trt11::ILogger* findLogger() override { return &logger; }
    Logger logger;
};
Finder gFinder;
extern "C" int32_t getInferLibMajorVersion() noexcept { return 11; }
extern "C" char const* fake_messages() { return gMessages.c_str(); }
// 1: created, 0: refused, -1: library or plugin not found.
extern "C" int fake_create(char const* libPath, char const* plugin, char const* field, float value, int length) {
    void* lib = dlopen(libPath, RTLD_NOW | RTLD_LOCAL);
    if (!lib) return -1;
    auto setLoggerFinder = reinterpret_cast<void (*)(void*)>(dlsym(lib, "setLoggerFinder"));
    auto getCreators = reinterpret_cast<nvinfer1::IPluginCreatorInterface* const* (*)(int32_t&)>(
        dlsym(lib, "getCreators"));
    if (!setLoggerFinder || !getCreators) return -1;
    setLoggerFinder(&gFinder);
    int32_t n = 0;
    nvinfer1::IPluginCreatorInterface* const* creators = getCreators(n);
    for (int32_t i = 0; i < n; ++i) {
        if (std::strcmp(creators[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0) continue;
        auto* c = static_cast<nvinfer1::IPluginCreatorV3One*>(creators[i]);
        if (std::strcmp(c->getPluginName(), plugin) != 0) continue;
        std::string values(sizeof(float) * length, '\0');
        for (int k = 0; k < length; ++k) std::memcpy(&values[sizeof(float) * k], &value, sizeof(float));
        nvinfer1::PluginField f{field, values.data(), nvinfer1::PluginFieldType::kFLOAT32, length};
        nvinfer1::PluginFieldCollection fc{1, &f};
        nvinfer1::IPluginV3* p = c->createPlugin("fake_node", &fc, nvinfer1::TensorRTPhase::kBUILD);
        delete p;
        return p != nullptr ? 1 : 0;
    }
    return -1;
}
"""


@pytest.mark.slow
def test_library_built_with_10_headers_logs_through_a_trt11_finder(generated_cases, tmp_path):
    """setLoggerFinder with a finder of TensorRT 11's layout, then createPlugin with a contradicting field: the
    plugin's error must reach the TensorRT 11 logger, as severity kERROR."""
    from opforge.build.nvcc import run_nvcc
    from opforge.build.trt_headers import trt_headers_version, trt_include_dir

    assert trt_headers_version()[0] == 10, "this test checks a 10.x-header build under a TensorRT 11 finder"
    src = tmp_path / "fake_trt11.cpp"
    src.write_text(_FAKE_TRT11)
    fake = tmp_path / "libfake_trt11.so"
    flags = ["-shared", "-std=c++17", "-Xcompiler", "-fPIC", "-Xcompiler", "-Wno-deprecated-declarations"]
    run_nvcc([*flags, f"-I{trt_include_dir()}", "-o", str(fake), str(src), "-ldl"], src.name)
    host = ctypes.CDLL(str(fake))
    host.fake_messages.restype = ctypes.c_char_p
    host.fake_create.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_float, ctypes.c_int]

    spec = next(s for s in generated_cases.plugins if any(a.kind == "ints" for a in s.attrs))
    attr = next(a for a in spec.attrs if a.kind == "ints")
    lib = str(generated_cases.libraries[0]).encode()
    created = host.fake_create(lib, spec.name.encode(), attr.name.encode(), 12345.5, max(len(attr.ints), 1))
    assert created == 0
    messages = host.fake_messages().decode()
    assert f"{spec.name} (node fake_node): field {attr.name} is kFLOAT32" in messages, messages
    assert messages.startswith("1:"), messages  # Severity::kERROR


def test_constant_bytes_literal_round_trips():
    """A constant is baked as C string literals of \\xHH escapes: read back as C reads them, they are its bytes."""
    import codecs
    import re

    from opforge.emit.plugin_cpp import c_byte_literal

    raw = np.random.default_rng(7).integers(0, 256, 1000, dtype=np.uint8).tobytes() + b'\0\\"0a'
    text = c_byte_literal(raw)
    pieces = re.findall(r'^\s*"((?:\\x[0-9a-f]{2})*)"$', text, flags=re.M)
    assert len(pieces) == len(text.splitlines()) == -(-len(raw) // 64)
    assert b"".join(codecs.escape_decode(p)[0] for p in pieces) == raw


def _section_size(lib: Path, name: str) -> int:
    """The size of ELF section `name` in `lib` (0 when absent)."""
    out = subprocess.run(["readelf", "-S", "-W", str(lib)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.replace("[ ", "[").split()
        if len(fields) > 5 and fields[1] == name:
            return int(fields[5], 16)
    return 0


@pytest.mark.slow
def test_large_constant_stays_out_of_the_device_image(tmp_path):
    """A baked constant is host data copied to the device at initialization, not part of the device image (which
    nvcc writes into the host object as an initializer list: megabytes of it kept the host compiler busy for tens of
    minutes). The library holds the constant's bytes, but not in .nv_fatbin."""
    from opforge.generate import generate

    rng = np.random.default_rng(11)
    const = rng.standard_normal((256, 1024)).astype(np.float32)  # 1 MiB
    node = helper.make_node("Add", ["x", "c"], ["y"], name="add_big_constant")
    graph = helper.make_graph(
        [node],
        "big_constant",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 256, 1024])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 256, 1024])],
        [onnx.numpy_helper.from_array(const, "c")],
    )
    src = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(src))
    result = generate(src, tmp_path / "out", node_names=["add_big_constant"])
    (lib,) = result.libraries
    fatbin = _section_size(lib, ".nv_fatbin")
    assert 0 < fatbin < const.nbytes // 8, f".nv_fatbin is {fatbin} bytes"
    assert const.tobytes()[:4096] in lib.read_bytes()
