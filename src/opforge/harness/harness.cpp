// opforge harness: drives a plugin library through TensorRT's IPluginV3 interface, in TensorRT's call order, on a
// real GPU, standing in for TensorRT where no TensorRT runtime is available. Part of opforge (Apache-2.0).
//
// Sequence (one call of opf_run): dlopen -> setLoggerFinder -> getCreators -> find creator (name, version "1",
// namespace "") -> createPlugin(fields, kBUILD) -> getCapabilityInterface(core/build/runtime) -> getNbOutputs ->
// getOutputDataTypes -> getOutputShapes (IExprBuilder implemented here) -> supportsFormatCombination (every position,
// plus negative probes) -> configurePlugin -> getWorkspaceSize -> getFieldsToSerialize -> createPlugin(kRUNTIME) ->
// attachToContext x2 (two execution contexts) -> onShapeChange -> enqueue on two streams concurrently.
//
// Data-dependent output shapes: a plugin declares a size tensor with IExprBuilder::declareSizeTensor(output, opt,
// upper); as TensorRT does, the harness allocates every output at the value of its shape expressions with each size
// tensor at its upper bound, poisons the whole allocation, and after the enqueue copies it all back. The caller
// (verify/harness.py) reads the size tensors and trims the outputs to their real, dense shapes before comparing.
#include <NvInferRuntime.h>
#include <cuda_runtime.h>
#include <dlfcn.h>

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

using namespace nvinfer1;

namespace
{

// ---- the IExprBuilder TensorRT would pass: every expression carries its value ---------------------------------
class DimExpr final : public IDimensionExpr, public apiv::VDimensionExpr
{
public:
    DimExpr(int64_t value, bool constant, bool sizeTensor = false)
        : mValue(value)
        , mConstant(constant)
        , mSizeTensor(sizeTensor)
    {
        mImpl = this;
    }
    bool isConstant() const override { return mConstant; }
    int64_t getConstantValue() const override { return mConstant ? mValue : -1; }
    bool isSizeTensor() const override { return mSizeTensor; }
    int64_t value() const { return mValue; }
    ~DimExpr() noexcept override = default;

private:
    int64_t mValue; // for a size tensor: its upper bound, the extent outputs are allocated at
    bool mConstant;
    bool mSizeTensor;
};

// A size tensor a plugin declared in getOutputShapes.
struct SizeTensorDecl
{
    int32_t output;
    int64_t opt;
    int64_t upper;
};

class ExprBuilder final : public IExprBuilder, public apiv::VExprBuilder
{
public:
    ExprBuilder() { mImpl = this; }
    ~ExprBuilder() noexcept override = default;

    DimExpr const* make(int64_t value, bool constant, bool sizeTensor = false)
    {
        mExprs.emplace_back(new DimExpr(value, constant, sizeTensor));
        return mExprs.back().get();
    }
    IDimensionExpr const* constant(int64_t value) override { return make(value, true); }
    IDimensionExpr const* operation(DimensionOperation op, IDimensionExpr const& a, IDimensionExpr const& b) override
    {
        int64_t const x = static_cast<DimExpr const&>(a).value();
        int64_t const y = static_cast<DimExpr const&>(b).value();
        int64_t r = 0;
        switch (op)
        {
        case DimensionOperation::kSUM: r = x + y; break;
        case DimensionOperation::kPROD: r = x * y; break;
        case DimensionOperation::kMAX: r = x > y ? x : y; break;
        case DimensionOperation::kMIN: r = x < y ? x : y; break;
        case DimensionOperation::kSUB: r = x - y; break;
        case DimensionOperation::kEQUAL: r = x == y; break;
        case DimensionOperation::kLESS: r = x < y; break;
        case DimensionOperation::kFLOOR_DIV:
            if (y == 0) throw std::runtime_error("getOutputShapes: division by zero");
            r = x / y - ((x % y != 0) && ((x < 0) != (y < 0)));
            break;
        case DimensionOperation::kCEIL_DIV:
            if (y == 0) throw std::runtime_error("getOutputShapes: division by zero");
            r = -((-x) / y - (((-x) % y != 0) && (((-x) < 0) != (y < 0))));
            break;
        }
        return make(r, a.isConstant() && b.isConstant());
    }
    // TensorRT's rules: opt must not depend on a size tensor, each output is declared at most once; the value the
    // returned expression carries is the upper bound (what outputs are allocated at).
    IDimensionExpr const* declareSizeTensor(int32_t outputIndex, IDimensionExpr const& opt, IDimensionExpr const& upper) override
    {
        if (opt.isSizeTensor() || upper.isSizeTensor())
        {
            throw std::runtime_error("getOutputShapes: a size tensor's opt or upper bound depends on a size tensor");
        }
        for (SizeTensorDecl const& d : sizes)
        {
            if (d.output == outputIndex)
            {
                throw std::runtime_error("getOutputShapes: output " + std::to_string(outputIndex)
                    + " is declared a size tensor twice");
            }
        }
        int64_t const o = static_cast<DimExpr const&>(opt).value();
        int64_t const u = static_cast<DimExpr const&>(upper).value();
        if (u < 0 || o < 0 || o > u)
        {
            throw std::runtime_error("getOutputShapes: size tensor of output " + std::to_string(outputIndex)
                + " has opt " + std::to_string(o) + " and upper bound " + std::to_string(u));
        }
        sizes.push_back({outputIndex, o, u});
        return make(u, false, true);
    }

    std::vector<SizeTensorDecl> sizes;

private:
    std::deque<std::unique_ptr<DimExpr>> mExprs;
};

class Logger final : public ILogger
{
public:
    void log(Severity severity, AsciiChar const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            messages += (severity <= Severity::kERROR ? "[plugin error] " : "[plugin warning] ");
            messages += msg;
            messages += "\n";
        }
    }
    std::string messages;
};

class LoggerFinder final : public ILoggerFinder
{
public:
    ILogger* findLogger() override { return &logger; }
    Logger logger;
};

class ResourceContext final : public IPluginResourceContext
{
public:
    IGpuAllocator* getGpuAllocator() const noexcept override { return nullptr; }
    IErrorRecorder* getErrorRecorder() const noexcept override { return nullptr; }
};

struct Failure : std::runtime_error
{
    using std::runtime_error::runtime_error;
};

std::string format(char const* fmt, ...)
{
    char buf[1024];
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(buf, sizeof(buf), fmt, args);
    va_end(args);
    return buf;
}

void check(bool ok, std::string const& what)
{
    if (!ok)
    {
        throw Failure(what);
    }
}

void checkCuda(cudaError_t err, char const* what)
{
    if (err != cudaSuccess)
    {
        throw Failure(format("%s: %s", what, cudaGetErrorString(err)));
    }
}

DataType parseType(char const* name)
{
    static char const* const kNames[] = {"kFLOAT", "kHALF", "kINT8", "kINT32", "kBOOL", "kUINT8", "kFP8", "kBF16",
        "kINT64", "kINT4", "kFP4", "kE8M0"};
    for (int32_t i = 0; i < 12; ++i)
    {
        if (std::strcmp(name, kNames[i]) == 0)
        {
            return static_cast<DataType>(i);
        }
    }
    throw Failure(format("unknown data type %s", name));
}

size_t elementSize(DataType t)
{
    switch (t)
    {
    case DataType::kINT64: return 8;
    case DataType::kFLOAT:
    case DataType::kINT32: return 4;
    case DataType::kHALF:
    case DataType::kBF16: return 2;
    default: return 1;
    }
}

struct Library
{
    void* handle{nullptr};
    ~Library()
    {
        if (handle != nullptr)
        {
            dlclose(handle);
        }
    }
};

IPluginCreatorV3One* findCreator(Library& lib, char const* path, char const* name, LoggerFinder* finder)
{
    lib.handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    check(lib.handle != nullptr, format("dlopen %s: %s", path, dlerror()));
    using SetLoggerFinder = void (*)(ILoggerFinder*);
    using GetCreators = IPluginCreatorInterface* const* (*) (int32_t&);
    auto setLogger = reinterpret_cast<SetLoggerFinder>(dlsym(lib.handle, "setLoggerFinder"));
    auto getCreators = reinterpret_cast<GetCreators>(dlsym(lib.handle, "getCreators"));
    check(setLogger != nullptr, "the library does not export setLoggerFinder");
    check(getCreators != nullptr, "the library does not export getCreators");
    if (finder != nullptr)
    {
        setLogger(finder);
    }
    int32_t n = 0;
    IPluginCreatorInterface* const* creators = getCreators(n);
    for (int32_t i = 0; i < n; ++i)
    {
        InterfaceInfo const info = creators[i]->getInterfaceInfo();
        if (std::strcmp(info.kind, "PLUGIN CREATOR_V3ONE") != 0)
        {
            continue;
        }
        auto* c = static_cast<IPluginCreatorV3One*>(creators[i]);
        if (std::strcmp(c->getPluginName(), name) == 0 && std::strcmp(c->getPluginVersion(), "1") == 0
            && std::strcmp(c->getPluginNamespace(), "") == 0)
        {
            return c;
        }
    }
    throw Failure(format("no IPluginCreatorV3One named %s (version 1, namespace \"\") among %d creators", name, n));
}

struct DeviceBuffer
{
    void* ptr{nullptr};
    explicit DeviceBuffer(size_t bytes) { checkCuda(cudaMalloc(&ptr, bytes > 0 ? bytes : 1), "cudaMalloc"); }
    ~DeviceBuffer() { cudaFree(ptr); }
    DeviceBuffer(DeviceBuffer const&) = delete;
    DeviceBuffer& operator=(DeviceBuffer const&) = delete;
};

struct Stream
{
    cudaStream_t s{nullptr};
    Stream() { checkCuda(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate"); }
    ~Stream() { cudaStreamDestroy(s); }
};

// Timing request: `calls` back-to-back enqueues (context 1) captured in one CUDA graph, replayed `replays`
// times, each replay timed with CUDA events; with flushL2, a 256 MiB buffer is rewritten before each replay
// (outside the timed region). samplesUs receives the time per call of each replay.
struct OpfTiming
{
    int32_t calls;
    int32_t replays;
    int32_t flushL2;
    float* samplesUs;
};

// Times t.calls back-to-back calls of `enqueue` captured in one CUDA graph (no host dispatch in the timed region).
template <typename F>
void timeEnqueues(OpfTiming const& t, F&& enqueue)
{
    Stream s;
    size_t const flushBytes = t.flushL2 != 0 ? (size_t{256} << 20) : 0;
    DeviceBuffer flush(flushBytes);
    cudaGraph_t graph{nullptr};
    checkCuda(cudaStreamBeginCapture(s.s, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    for (int32_t i = 0; i < t.calls; ++i)
    {
        enqueue(s.s);
    }
    checkCuda(cudaStreamEndCapture(s.s, &graph), "cudaStreamEndCapture");
    cudaGraphExec_t exec{nullptr};
    checkCuda(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
    cudaEvent_t start{nullptr}, stop{nullptr};
    checkCuda(cudaEventCreate(&start), "cudaEventCreate");
    checkCuda(cudaEventCreate(&stop), "cudaEventCreate");
    checkCuda(cudaGraphLaunch(exec, s.s), "warm-up replay");
    for (int32_t r = 0; r < t.replays; ++r)
    {
        if (flushBytes > 0)
        {
            checkCuda(cudaMemsetAsync(flush.ptr, r & 0xFF, flushBytes, s.s), "L2 flush");
        }
        checkCuda(cudaEventRecord(start, s.s), "cudaEventRecord");
        checkCuda(cudaGraphLaunch(exec, s.s), "cudaGraphLaunch");
        checkCuda(cudaEventRecord(stop, s.s), "cudaEventRecord");
        checkCuda(cudaEventSynchronize(stop), "replay");
        float ms = 0.F;
        checkCuda(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
        t.samplesUs[r] = ms * 1000.F / static_cast<float>(t.calls);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
}

template <typename T>
T* capability(IPluginV3* p, PluginCapabilityType type, char const* what)
{
    auto* c = p->getCapabilityInterface(type);
    check(c != nullptr, format("getCapabilityInterface(%s) returned null", what));
    return static_cast<T*>(c);
}

} // namespace

// Like libnvinfer, the harness reports TensorRT's major version (that of the headers it was compiled with): a plugin
// library asks the owner of the ILoggerFinder it is given which ABI to call it through (TensorRT 10 or 11 layout).
extern "C" int32_t getInferLibMajorVersion() noexcept
{
    return NV_TENSORRT_MAJOR;
}

extern "C"
{
    // A tensor crossing the C API: TensorRT data type name, shape, host data (in for inputs, out for outputs).
    struct OpfTensor
    {
        char const* dtype;
        int32_t nbDims;
        int64_t dims[8];
        void* host;
        int32_t symbolicMask; // bit k: dimension k is not a build-time constant
    };

    struct OpfField
    {
        char const* name;
        int32_t type; // nvinfer1::PluginFieldType
        int32_t length;
        void const* data;
    };

    // Field names and types the creator declares, as "name:type;name:type;..." into `out`.
    int32_t opf_creator_fields(char const* libPath, char const* pluginName, char* out, int32_t outLen, char* err,
        int32_t errLen)
    {
        try
        {
            Library lib;
            IPluginCreatorV3One* creator = findCreator(lib, libPath, pluginName, nullptr);
            PluginFieldCollection const* fc = creator->getFieldNames();
            std::string s;
            for (int32_t i = 0; fc != nullptr && i < fc->nbFields; ++i)
            {
                s += format("%s:%d;", fc->fields[i].name, static_cast<int32_t>(fc->fields[i].type));
            }
            std::snprintf(out, static_cast<size_t>(outLen), "%s", s.c_str());
            return 0;
        }
        catch (std::exception const& e)
        {
            std::snprintf(err, static_cast<size_t>(errLen), "%s", e.what());
            return 1;
        }
    }

    // The whole TensorRT sequence on the current GPU. Outputs of context 1 go to outs, of context 2 to outs2.
    // With execute == 0 it stops before the first CUDA call (after onShapeChange): the part that needs no GPU.
    int32_t opf_run(char const* libPath, char const* pluginName, OpfField const* fields, int32_t nbFields,
        OpfTensor const* ins, int32_t nbIn, OpfTensor* outs, OpfTensor* outs2, int32_t nbOut, int32_t poison,
        int32_t execute, OpfTiming const* timing, char* err, int32_t errLen)
    {
        LoggerFinder finder;
        std::string step = "start";
        try
        {
            Library lib;
            step = "find creator";
            IPluginCreatorV3One* creator = findCreator(lib, libPath, pluginName, &finder);

            step = "createPlugin(kBUILD)";
            std::vector<PluginField> fv;
            for (int32_t i = 0; i < nbFields; ++i)
            {
                fv.emplace_back(fields[i].name, fields[i].data, static_cast<PluginFieldType>(fields[i].type),
                    fields[i].length);
            }
            PluginFieldCollection fc{static_cast<int32_t>(fv.size()), fv.data()};
            std::unique_ptr<IPluginV3> buildPlugin(creator->createPlugin("harness_node", &fc, TensorRTPhase::kBUILD));
            check(buildPlugin != nullptr, "createPlugin(kBUILD) returned null");

            step = "capability interfaces";
            auto* core = capability<IPluginV3OneCore>(buildPlugin.get(), PluginCapabilityType::kCORE, "kCORE");
            auto* build = capability<IPluginV3OneBuild>(buildPlugin.get(), PluginCapabilityType::kBUILD, "kBUILD");
            check(std::strcmp(core->getPluginName(), pluginName) == 0, "IPluginV3OneCore::getPluginName differs");
            check(std::strcmp(core->getPluginVersion(), "1") == 0, "plugin version is not 1");
            check(std::strcmp(core->getPluginNamespace(), "") == 0, "plugin namespace is not empty");

            step = "getNbOutputs";
            check(build->getNbOutputs() == nbOut, format("getNbOutputs is %d, expected %d", build->getNbOutputs(), nbOut));

            step = "getOutputDataTypes";
            std::vector<DataType> inTypes(nbIn), outTypes(nbOut), expectedOut(nbOut);
            for (int32_t i = 0; i < nbIn; ++i)
            {
                inTypes[i] = parseType(ins[i].dtype);
            }
            for (int32_t i = 0; i < nbOut; ++i)
            {
                expectedOut[i] = parseType(outs[i].dtype);
            }
            check(build->getOutputDataTypes(outTypes.data(), nbOut, inTypes.data(), nbIn) == 0,
                "getOutputDataTypes failed");
            for (int32_t i = 0; i < nbOut; ++i)
            {
                check(outTypes[i] == expectedOut[i], format("output %d data type differs from the ONNX model's", i));
            }

            step = "getOutputShapes";
            ExprBuilder exprBuilder;
            std::vector<DimsExprs> inExprs(nbIn), outExprs(nbOut);
            for (int32_t i = 0; i < nbIn; ++i)
            {
                inExprs[i].nbDims = ins[i].nbDims;
                for (int32_t d = 0; d < ins[i].nbDims; ++d)
                {
                    inExprs[i].d[d] = exprBuilder.make(ins[i].dims[d], !((ins[i].symbolicMask >> d) & 1));
                }
            }
            check(build->getOutputShapes(inExprs.data(), nbIn, nullptr, 0, outExprs.data(), nbOut, exprBuilder) == 0,
                "getOutputShapes failed");
            for (SizeTensorDecl const& d : exprBuilder.sizes)
            {
                check(d.output >= 0 && d.output < nbOut, format("declareSizeTensor names output %d of %d", d.output, nbOut));
                check(outExprs[d.output].nbDims == 0, format("size tensor output %d is not declared 0-D", d.output));
                check(outTypes[d.output] == DataType::kINT32 || outTypes[d.output] == DataType::kINT64,
                    format("size tensor output %d is not INT32 or INT64", d.output));
            }
            for (int32_t i = 0; i < nbOut; ++i)
            {
                check(outExprs[i].nbDims == outs[i].nbDims, format("output %d rank differs from the reference", i));
                for (int32_t d = 0; d < outs[i].nbDims; ++d)
                {
                    int64_t const got = static_cast<DimExpr const*>(outExprs[i].d[d])->value();
                    check(got == outs[i].dims[d],
                        format("output %d dim %d is %lld, the reference says %lld", i, d, static_cast<long long>(got),
                            static_cast<long long>(outs[i].dims[d])));
                }
            }

            step = "supportsFormatCombination";
            std::vector<DynamicPluginTensorDesc> io(nbIn + nbOut);
            for (int32_t i = 0; i < nbIn + nbOut; ++i)
            {
                OpfTensor const& t = i < nbIn ? ins[i] : outs[i - nbIn];
                auto& desc = io[i];
                desc.desc.type = parseType(t.dtype);
                desc.desc.format = TensorFormat::kLINEAR;
                desc.desc.scale = 1.F;
                desc.desc.dims.nbDims = t.nbDims;
                for (int32_t d = 0; d < t.nbDims; ++d)
                {
                    desc.desc.dims.d[d] = ((t.symbolicMask >> d) & 1) ? -1 : t.dims[d];
                }
                desc.min = desc.max = desc.opt = desc.desc.dims;
                for (int32_t d = 0; d < t.nbDims; ++d)
                {
                    desc.min.d[d] = desc.max.d[d] = desc.opt.d[d] = t.dims[d];
                }
            }
            for (int32_t pos = 0; pos < nbIn + nbOut; ++pos)
            {
                check(build->supportsFormatCombination(pos, io.data(), nbIn, nbOut),
                    format("supportsFormatCombination rejects position %d in its own type and LINEAR", pos));
                // Probes TensorRT would make too: another format, another type.
                DynamicPluginTensorDesc const saved = io[pos];
                io[pos].desc.format = TensorFormat::kCHW32;
                check(!build->supportsFormatCombination(pos, io.data(), nbIn, nbOut),
                    format("supportsFormatCombination accepts CHW32 at position %d", pos));
                io[pos] = saved;
                io[pos].desc.type = saved.desc.type == DataType::kFLOAT ? DataType::kHALF : DataType::kFLOAT;
                check(!build->supportsFormatCombination(pos, io.data(), nbIn, nbOut),
                    format("supportsFormatCombination accepts a foreign data type at position %d", pos));
                io[pos] = saved;
            }

            step = "configurePlugin";
            check(build->configurePlugin(io.data(), nbIn, io.data() + nbIn, nbOut) == 0, "configurePlugin failed");

            step = "getWorkspaceSize";
            size_t const workspace = build->getWorkspaceSize(io.data(), nbIn, io.data() + nbIn, nbOut);

            step = "getFieldsToSerialize";
            auto* buildRuntime
                = capability<IPluginV3OneRuntime>(buildPlugin.get(), PluginCapabilityType::kRUNTIME, "kRUNTIME");
            PluginFieldCollection const* serialized = buildRuntime->getFieldsToSerialize();
            check(serialized != nullptr, "getFieldsToSerialize returned null");
            // What an engine file would hold: deep copies of the fields.
            std::vector<std::string> names;
            std::vector<std::vector<char>> blobs;
            std::vector<PluginField> copies;
            names.reserve(serialized->nbFields);
            blobs.reserve(serialized->nbFields);
            for (int32_t i = 0; i < serialized->nbFields; ++i)
            {
                PluginField const& f = serialized->fields[i];
                size_t bytes = static_cast<size_t>(f.length);
                switch (f.type)
                {
                case PluginFieldType::kFLOAT64:
                case PluginFieldType::kINT64: bytes *= 8; break;
                case PluginFieldType::kFLOAT32:
                case PluginFieldType::kINT32: bytes *= 4; break;
                case PluginFieldType::kFLOAT16:
                case PluginFieldType::kINT16:
                case PluginFieldType::kBF16: bytes *= 2; break;
                default: break;
                }
                names.emplace_back(f.name);
                blobs.emplace_back(static_cast<char const*>(f.data), static_cast<char const*>(f.data) + bytes);
                copies.emplace_back(names.back().c_str(), blobs.back().data(), f.type, f.length);
            }
            buildPlugin.reset();

            step = "createPlugin(kRUNTIME)";
            PluginFieldCollection fc2{static_cast<int32_t>(copies.size()), copies.data()};
            std::unique_ptr<IPluginV3> runtimePlugin(creator->createPlugin("harness_node", &fc2, TensorRTPhase::kRUNTIME));
            check(runtimePlugin != nullptr, "createPlugin(kRUNTIME) returned null");
            auto* runtime
                = capability<IPluginV3OneRuntime>(runtimePlugin.get(), PluginCapabilityType::kRUNTIME, "kRUNTIME");

            step = "attachToContext";
            ResourceContext resources;
            std::unique_ptr<IPluginV3> ctx1(runtime->attachToContext(&resources));
            std::unique_ptr<IPluginV3> ctx2(runtime->attachToContext(&resources));
            check(ctx1 != nullptr && ctx2 != nullptr, "attachToContext returned null");
            runtimePlugin.reset(); // contexts must not depend on the plugin they were attached from
            auto* rt1 = capability<IPluginV3OneRuntime>(ctx1.get(), PluginCapabilityType::kRUNTIME, "kRUNTIME");
            auto* rt2 = capability<IPluginV3OneRuntime>(ctx2.get(), PluginCapabilityType::kRUNTIME, "kRUNTIME");

            step = "onShapeChange";
            std::vector<PluginTensorDesc> inDesc(nbIn), outDesc(nbOut);
            for (int32_t i = 0; i < nbIn + nbOut; ++i)
            {
                PluginTensorDesc d = io[i].desc;
                d.dims = io[i].max; // concrete shapes at run time
                (i < nbIn ? inDesc[i] : outDesc[i - nbIn]) = d;
            }
            check(rt1->onShapeChange(inDesc.data(), nbIn, outDesc.data(), nbOut) == 0, "onShapeChange failed (context 1)");
            check(rt2->onShapeChange(inDesc.data(), nbIn, outDesc.data(), nbOut) == 0, "onShapeChange failed (context 2)");

            if (execute == 0)
            {
                return finder.logger.messages.find("[plugin error]") == std::string::npos ? 0 : 1;
            }

            step = "enqueue";
            auto bytesOf = [](OpfTensor const& t) {
                size_t n = elementSize(parseType(t.dtype));
                for (int32_t d = 0; d < t.nbDims; ++d)
                {
                    n *= static_cast<size_t>(t.dims[d]);
                }
                return n;
            };
            std::vector<std::unique_ptr<DeviceBuffer>> inBufs, out1, out2;
            std::vector<void const*> inPtrs;
            std::vector<void*> outPtrs1, outPtrs2;
            for (int32_t i = 0; i < nbIn; ++i)
            {
                inBufs.emplace_back(new DeviceBuffer(bytesOf(ins[i])));
                checkCuda(cudaMemcpy(inBufs.back()->ptr, ins[i].host, bytesOf(ins[i]), cudaMemcpyHostToDevice), "copy input");
                inPtrs.push_back(inBufs.back()->ptr);
            }
            for (int32_t i = 0; i < nbOut; ++i)
            {
                for (auto* v : {&out1, &out2})
                {
                    v->emplace_back(new DeviceBuffer(bytesOf(outs[i])));
                    checkCuda(cudaMemset(v->back()->ptr, poison, bytesOf(outs[i])), "poison output");
                }
                outPtrs1.push_back(out1.back()->ptr);
                outPtrs2.push_back(out2.back()->ptr);
            }
            DeviceBuffer ws1(workspace), ws2(workspace);
            checkCuda(cudaMemset(ws1.ptr, poison, workspace), "poison workspace");
            checkCuda(cudaMemset(ws2.ptr, poison, workspace), "poison workspace");
            checkCuda(cudaDeviceSynchronize(), "setup");
            Stream s1, s2;
            check(rt1->enqueue(inDesc.data(), outDesc.data(), inPtrs.data(), outPtrs1.data(), ws1.ptr, s1.s) == 0,
                "enqueue failed (context 1)");
            check(rt2->enqueue(inDesc.data(), outDesc.data(), inPtrs.data(), outPtrs2.data(), ws2.ptr, s2.s) == 0,
                "enqueue failed (context 2)");
            checkCuda(cudaStreamSynchronize(s1.s), "kernels (context 1)");
            checkCuda(cudaStreamSynchronize(s2.s), "kernels (context 2)");
            for (int32_t i = 0; i < nbOut; ++i)
            {
                checkCuda(cudaMemcpy(outs[i].host, outPtrs1[i], bytesOf(outs[i]), cudaMemcpyDeviceToHost), "copy output");
                checkCuda(cudaMemcpy(outs2[i].host, outPtrs2[i], bytesOf(outs[i]), cudaMemcpyDeviceToHost), "copy output");
            }
            if (!finder.logger.messages.empty() && finder.logger.messages.find("[plugin error]") != std::string::npos)
            {
                throw Failure("the plugin logged an error");
            }
            if (timing != nullptr)
            {
                step = "timing";
                timeEnqueues(*timing, [&](cudaStream_t s) {
                    check(rt1->enqueue(inDesc.data(), outDesc.data(), inPtrs.data(), outPtrs1.data(), ws1.ptr, s) == 0,
                        "enqueue failed (timing)");
                });
            }
            return 0;
        }
        catch (std::exception const& e)
        {
            std::snprintf(err, static_cast<size_t>(errLen), "%s: %s%s%s", step.c_str(), e.what(),
                finder.logger.messages.empty() ? "" : "\n", finder.logger.messages.c_str());
            return 1;
        }
    }
}
