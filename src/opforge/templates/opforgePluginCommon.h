// opforge plugin support: logging through TensorRT's logger, shape arithmetic, plugin-field checks.
// Shared by every plugin of an opforge-generated library. Part of opforge (Apache-2.0).
#pragma once

#include "opforgeShapeMath.h"

#include <NvInferRuntime.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace opforge
{

// ---- logging -------------------------------------------------------------------------------------------------
// TensorRT hands the library its logger finder through setLoggerFinder(); until then messages go nowhere.
inline nvinfer1::ILoggerFinder* gLoggerFinder{nullptr};

inline void log(nvinfer1::ILogger::Severity severity, std::string const& msg) noexcept
{
    nvinfer1::ILogger* logger = gLoggerFinder != nullptr ? gLoggerFinder->findLogger() : nullptr;
    if (logger != nullptr)
    {
        logger->log(severity, msg.c_str());
    }
}

inline void logError(std::string const& msg) noexcept
{
    log(nvinfer1::ILogger::Severity::kERROR, msg);
}

// ---- plugin fields -------------------------------------------------------------------------------------------
// The values a plugin was generated for, in the field type it declares.
struct FieldSpec
{
    char const* name;
    nvinfer1::PluginFieldType type;
    void const* data;
    int32_t length;
};

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

// Does a field given to createPlugin carry the value the plugin was generated for?
inline bool fieldMatches(nvinfer1::PluginField const& given, FieldSpec const& spec)
{
    if (spec.type == nvinfer1::PluginFieldType::kCHAR)
    {
        if (given.type != nvinfer1::PluginFieldType::kCHAR || given.data == nullptr)
        {
            return false;
        }
        std::string a(static_cast<char const*>(given.data), static_cast<size_t>(given.length));
        std::string b(static_cast<char const*>(spec.data), static_cast<size_t>(spec.length));
        a = a.substr(0, a.find('\0'));
        b = b.substr(0, b.find('\0'));
        return a == b;
    }
    nvinfer1::PluginField const expected{spec.name, spec.data, spec.type, spec.length};
    std::vector<double> got;
    std::vector<double> want;
    if (given.data == nullptr || !readNumbers(given, got) || !readNumbers(expected, want) || got.size() != want.size())
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
