// opforge plugin support: logging through TensorRT's logger, shape arithmetic, plugin-field checks.
// Shared by every plugin of an opforge-generated library. Part of opforge (Apache-2.0).
#pragma once

#include "opforgeShapeMath.h"

#include <NvInferRuntime.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace opforge
{

// ---- logging ---------------------------------------------------------------------------------------------------
// TensorRT hands the library an ILoggerFinder through setLoggerFinder() (opforge_library.cpp); until then, and when
// the finder's ABI is not recognised, messages go nowhere. The finder (and the ILogger it returns) belong to the
// TensorRT that loaded the library, whose major version may differ from that of the headers this library was
// compiled with, and the two majors lay the interfaces out differently (Itanium C++ ABI, slots in declaration order,
// a virtual destructor takes two):
//
//   TensorRT 10.x  ILoggerFinder: findLogger, ~, ~                                 ILogger: log, ~, ~
//   TensorRT 11.x  ILoggerFinder: getAPILanguage, getInterfaceInfo, ~, ~, findLogger   (both derive from
//                  ILogger:       getAPILanguage, getInterfaceInfo, ~, ~, log           IVersionedInterface)
//
// So the library never calls them through nvinfer1's declarations: it calls through the mirror declarations below,
// picking the layout of the TensorRT that owns the finder (see loggerAbiOf in opforge_library.cpp).
namespace abi
{

enum class LoggerAbi : int32_t
{
    kNONE = 0,    //!< No finder, or one of an unknown layout: drop messages.
    kTRT10 = 10,  //!< TensorRT 10.x layout.
    kTRT11 = 11,  //!< TensorRT 11.x layout (IVersionedInterface first).
};

//! TensorRT 10.x: nvinfer1::ILoggerFinder and nvinfer1::ILogger.
class LoggerFinder10
{
public:
    virtual void* findLogger() = 0;

protected:
    virtual ~LoggerFinder10() = default;
};

class Logger10
{
public:
    virtual void log(int32_t severity, char const* msg) noexcept = 0;

protected:
    virtual ~Logger10() = default;
};

//! TensorRT 11.x: nvinfer1::InterfaceInfo, nvinfer1::IVersionedInterface, then ILoggerFinder and ILogger.
struct InterfaceInfo11
{
    char const* kind;
    int32_t major;
    int32_t minor;
};

class VersionedInterface11
{
public:
    virtual int32_t getAPILanguage() const noexcept = 0;
    virtual InterfaceInfo11 getInterfaceInfo() const noexcept = 0;

protected:
    virtual ~VersionedInterface11() noexcept = default;
};

class LoggerFinder11 : public VersionedInterface11
{
public:
    virtual void* findLogger() = 0;

protected:
    ~LoggerFinder11() noexcept override = default;
};

class Logger11 : public VersionedInterface11
{
public:
    virtual void log(int32_t severity, char const* msg) noexcept = 0;

protected:
    ~Logger11() noexcept override = default;
};

//! Is `object` (of the TensorRT 11.x layout) the interface `kind`, major version 1?
inline bool isInterface11(VersionedInterface11 const* object, char const* kind) noexcept
{
    InterfaceInfo11 const info = object->getInterfaceInfo();
    return info.kind != nullptr && std::strcmp(info.kind, kind) == 0 && info.major == 1;
}

} // namespace abi

//! Sends `msg` to the logger of the TensorRT that loaded this library (defined once, in opforge_library.cpp).
void log(nvinfer1::ILogger::Severity severity, std::string const& msg) noexcept;

inline void logError(std::string const& msg) noexcept
{
    log(nvinfer1::ILogger::Severity::kERROR, msg);
}

// ---- plugin fields -----------------------------------------------------------------------------------------------
// How a field's value is written. TensorRT's ONNX parser narrows INT/INTS attributes to int32 without a range check,
// so opforge writes an integer attribute outside int32 as a STRING of decimal values separated by commas, which the
// parser passes unchanged as kCHAR.
enum class FieldEncoding : int32_t
{
    kVALUE = 0,      //!< The field holds its values in `type`.
    kINT64_TEXT = 1, //!< A kCHAR field holding int64 values as decimal text, e.g. "1099511627776,-3".
};

// The values a plugin was generated for, in the field type it declares.
struct FieldSpec
{
    char const* name;
    nvinfer1::PluginFieldType type;
    void const* data;
    int32_t length;
    FieldEncoding encoding{FieldEncoding::kVALUE};
};

inline bool isIntegerType(nvinfer1::PluginFieldType t) noexcept
{
    using T = nvinfer1::PluginFieldType;
    return t == T::kINT8 || t == T::kINT16 || t == T::kINT32 || t == T::kINT64;
}

// A numeric field read as doubles, whatever PluginFieldType the caller used. False for non-numeric types.
inline bool readNumbers(nvinfer1::PluginField const& f, std::vector<double>& out)
{
    using T = nvinfer1::PluginFieldType;
    out.resize(static_cast<size_t>(std::max<int32_t>(f.length, 0)));
    for (size_t i = 0; i < out.size(); ++i)
    {
        switch (f.type)
        {
        case T::kINT8: out[i] = static_cast<int8_t const*>(f.data)[i]; break;
        case T::kINT16: out[i] = static_cast<int16_t const*>(f.data)[i]; break;
        case T::kINT32: out[i] = static_cast<int32_t const*>(f.data)[i]; break;
        case T::kINT64: out[i] = static_cast<double>(static_cast<int64_t const*>(f.data)[i]); break;
        case T::kFLOAT32: out[i] = static_cast<float const*>(f.data)[i]; break;
        case T::kFLOAT64: out[i] = static_cast<double const*>(f.data)[i]; break;
        default: return false;
        }
    }
    return true;
}

// The text of a kCHAR field: `length` bytes, up to the first NUL (the parser may count the terminator or not).
inline std::string readText(void const* data, int32_t length)
{
    std::string s(static_cast<char const*>(data), static_cast<size_t>(std::max<int32_t>(length, 0)));
    return s.substr(0, s.find('\0'));
}

// Decimal integers separated by commas ("" is the empty list). False on anything else or on int64 overflow.
inline bool parseInt64List(std::string const& text, std::vector<int64_t>& out)
{
    out.clear();
    size_t pos = 0;
    while (pos < text.size())
    {
        size_t const end = std::min(text.find(',', pos), text.size());
        std::string const item = text.substr(pos, end - pos);
        size_t const digits = (!item.empty() && (item[0] == '-' || item[0] == '+')) ? 1 : 0;
        if (item.size() == digits || item.find_first_not_of("0123456789", digits) != std::string::npos)
        {
            return false;
        }
        errno = 0;
        long long const v = std::strtoll(item.c_str(), nullptr, 10);
        if (errno == ERANGE)
        {
            return false;
        }
        out.push_back(static_cast<int64_t>(v));
        pos = end + 1;
    }
    return true;
}

// An integer field (of any integer type, or int64 text) read exactly as int64. False for other fields.
inline bool readIntegers(nvinfer1::PluginField const& f, FieldEncoding encoding, std::vector<int64_t>& out)
{
    using T = nvinfer1::PluginFieldType;
    if (f.type == T::kCHAR)
    {
        return encoding == FieldEncoding::kINT64_TEXT && parseInt64List(readText(f.data, f.length), out);
    }
    out.resize(static_cast<size_t>(std::max<int32_t>(f.length, 0)));
    for (size_t i = 0; i < out.size(); ++i)
    {
        switch (f.type)
        {
        case T::kINT8: out[i] = static_cast<int8_t const*>(f.data)[i]; break;
        case T::kINT16: out[i] = static_cast<int16_t const*>(f.data)[i]; break;
        case T::kINT32: out[i] = static_cast<int32_t const*>(f.data)[i]; break;
        case T::kINT64: out[i] = static_cast<int64_t const*>(f.data)[i]; break;
        default: return false;
        }
    }
    return true;
}

// A field for a log message: "kINT32[3] {1, 2, 3}", "kCHAR \"linear\"" (at most 8 values shown).
inline std::string describeField(nvinfer1::PluginField const& f)
{
    using T = nvinfer1::PluginFieldType;
    static char const* const kNames[] = {"kFLOAT16", "kFLOAT32", "kFLOAT64", "kINT8", "kINT16", "kINT32", "kCHAR",
        "kDIMS", "kUNKNOWN", "kBF16", "kINT64", "kFP8", "kINT4", "kFP4"};
    auto const t = static_cast<int32_t>(f.type);
    std::string out = (t >= 0 && t < static_cast<int32_t>(sizeof(kNames) / sizeof(kNames[0])))
        ? kNames[t]
        : "type " + std::to_string(t);
    if (f.data == nullptr)
    {
        return out + "[" + std::to_string(f.length) + "] (no data)";
    }
    if (f.type == T::kCHAR)
    {
        return out + " \"" + readText(f.data, f.length) + "\"";
    }
    std::vector<int64_t> ints;
    std::vector<double> numbers;
    out += "[" + std::to_string(f.length) + "] {";
    if (readIntegers(f, FieldEncoding::kVALUE, ints))
    {
        for (size_t i = 0; i < ints.size() && i < 8; ++i)
        {
            out += (i ? ", " : "") + std::to_string(ints[i]);
        }
    }
    else if (readNumbers(f, numbers))
    {
        for (size_t i = 0; i < numbers.size() && i < 8; ++i)
        {
            out += (i ? ", " : "") + std::to_string(numbers[i]);
        }
    }
    return out + (f.length > 8 ? ", ...}" : "}");
}

// Does a field given to createPlugin carry the value the plugin was generated for? Integers compare exactly (as
// int64, whatever integer type or int64 text carries them), floats at float32 precision, text as text.
inline bool fieldMatches(nvinfer1::PluginField const& given, FieldSpec const& spec)
{
    if (given.data == nullptr && given.length > 0)
    {
        return false;
    }
    nvinfer1::PluginField const expected{spec.name, spec.data, spec.type, spec.length};
    if (spec.encoding == FieldEncoding::kINT64_TEXT || isIntegerType(spec.type))
    {
        std::vector<int64_t> got;
        std::vector<int64_t> want;
        std::vector<double> numbers;
        bool ok = readIntegers(given, FieldEncoding::kINT64_TEXT, got);
        if (!ok && readNumbers(given, numbers))
        {
            // A float-typed field with integral values (|v| < 2^53, exact in a double) is accepted too.
            ok = true;
            got.clear();
            for (double const v : numbers)
            {
                if (v != std::trunc(v) || std::fabs(v) >= 9007199254740992.0)
                {
                    return false;
                }
                got.push_back(static_cast<int64_t>(v));
            }
        }
        return ok && readIntegers(expected, spec.encoding, want) && got == want;
    }
    if (spec.type == nvinfer1::PluginFieldType::kCHAR)
    {
        return given.type == nvinfer1::PluginFieldType::kCHAR
            && readText(given.data, given.length) == readText(spec.data, spec.length);
    }
    std::vector<double> got;
    std::vector<double> want;
    if (!readNumbers(given, got) || !readNumbers(expected, want) || got.size() != want.size())
    {
        return false;
    }
    for (size_t i = 0; i < got.size(); ++i)
    {
        // float32 fields may arrive as float64 or the reverse: compare at float32 precision.
        if (std::fabs(got[i] - want[i]) > 1e-6 * std::max(1.0, std::fabs(want[i])))
        {
            return false;
        }
    }
    return true;
}

} // namespace opforge
