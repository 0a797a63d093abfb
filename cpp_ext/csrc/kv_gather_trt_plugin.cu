// TensorRT plugin "KVGather" (version "1", empty namespace): the tav::KVGather ONNX node.
//
// An IPluginV3 (TensorRT 10+ / TensorRT-RTX) whose enqueue launches the same kernel as the
// torch op (kv_gather_kernels.h). The library exports getCreators/setLoggerFinder, so
// IPluginRegistry::loadLibrary (python: trt.get_plugin_registry().load_library(path))
// registers it for the ONNX parser, the builder and engine deserialisation alike.
// It links nothing from TensorRT, only the CUDA runtime (statically).

#include <NvInferRuntime.h>

#include <cstring>
#include <string>
#include <vector>

#include "kv_gather_kernels.h"

using namespace nvinfer1;

namespace tav {
namespace {

constexpr char const* kName = "KVGather";
constexpr char const* kVersion = "1";
constexpr char const* kFieldNumFrames = "num_frames";

ILoggerFinder* gLoggerFinder = nullptr;

void log_error(char const* message) {
  ILogger* logger = gLoggerFinder ? gLoggerFinder->findLogger() : nullptr;
  if (logger) logger->log(ILogger::Severity::kERROR, message);
}

bool is_float_type(DataType t) { return t == DataType::kFLOAT || t == DataType::kHALF || t == DataType::kBF16; }

int64_t element_size(DataType t) { return t == DataType::kFLOAT ? 4 : 2; }

class KVGatherPlugin final : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild, public IPluginV3OneRuntime {
 public:
  explicit KVGatherPlugin(int32_t num_frames) : num_frames_(num_frames) {
    field_ = PluginField(kFieldNumFrames, &num_frames_, PluginFieldType::kINT32, 1);
    fields_.nbFields = 1;
    fields_.fields = &field_;
  }

  // IPluginV3
  IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
    switch (type) {
      case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
      case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
      case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
    }
    return nullptr;
  }
  IPluginV3* clone() noexcept override { return new (std::nothrow) KVGatherPlugin(num_frames_); }

  // IPluginV3OneCore
  char const* getPluginName() const noexcept override { return kName; }
  char const* getPluginVersion() const noexcept override { return kVersion; }
  char const* getPluginNamespace() const noexcept override { return ""; }

  // IPluginV3OneBuild
  int32_t getNbOutputs() const noexcept override { return 2; }

  int32_t getOutputDataTypes(DataType* out, int32_t nb_out, DataType const* in, int32_t nb_in) const noexcept override {
    if (nb_in != 2 || nb_out != 2) return -1;
    out[0] = in[0];
    out[1] = in[1];
    return 0;
  }

  // [B*F, N, C] -> [B*F, 2N, C] for each input.
  int32_t getOutputShapes(DimsExprs const* in, int32_t nb_in, DimsExprs const*, int32_t, DimsExprs* out, int32_t nb_out,
                          IExprBuilder& expr) noexcept override {
    if (nb_in != 2 || nb_out != 2) return -1;
    for (int32_t t = 0; t < 2; ++t) {
      if (in[t].nbDims != 3) {
        log_error("KVGather: inputs must be rank 3 [B*F, N, C]");
        return -1;
      }
      out[t] = in[t];
      out[t].d[1] = expr.operation(DimensionOperation::kPROD, *expr.constant(2), *in[t].d[1]);
    }
    return 0;
  }

  // Linear float/half/bf16 tensors; each output has its input's type.
  bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* io, int32_t nb_in,
                                 int32_t nb_out) noexcept override {
    if (nb_in != 2 || nb_out != 2 || pos < 0 || pos > 3) return false;
    PluginTensorDesc const& d = io[pos].desc;
    if (d.format != TensorFormat::kLINEAR || !is_float_type(d.type)) return false;
    return pos < 2 || d.type == io[pos - 2].desc.type;
  }

  int32_t configurePlugin(DynamicPluginTensorDesc const*, int32_t, DynamicPluginTensorDesc const*,
                          int32_t) noexcept override {
    return 0;
  }
  size_t getWorkspaceSize(DynamicPluginTensorDesc const*, int32_t, DynamicPluginTensorDesc const*,
                          int32_t) const noexcept override {
    return 0;
  }

  // IPluginV3OneRuntime
  int32_t onShapeChange(PluginTensorDesc const*, int32_t, PluginTensorDesc const*, int32_t) noexcept override {
    return 0;
  }

  int32_t enqueue(PluginTensorDesc const* in, PluginTensorDesc const*, void const* const* inputs, void* const* outputs,
                  void*, cudaStream_t stream) noexcept override {
    const int64_t batch_frames = in[0].dims.d[0];
    if (in[1].dims.d[0] != batch_frames || num_frames_ < 1 || batch_frames % num_frames_ != 0) {
      log_error("KVGather: batch*frames is not a multiple of num_frames, or k and v disagree");
      return -1;
    }
    KVGatherParams p{};
    for (int t = 0; t < 2; ++t) {
      p.tensor[t] = {inputs[t], outputs[t], in[t].dims.d[1] * in[t].dims.d[2] * element_size(in[t].type)};
    }
    p.batch_frames = batch_frames;
    p.num_frames = num_frames_;
    if (launch_kv_gather(p, stream) != cudaSuccess) {
      log_error(cudaGetErrorString(cudaGetLastError()));  // also clears the launch error
      return -1;
    }
    return 0;
  }

  IPluginV3* attachToContext(IPluginResourceContext*) noexcept override { return clone(); }
  PluginFieldCollection const* getFieldsToSerialize() noexcept override { return &fields_; }

 private:
  int32_t num_frames_;
  PluginField field_;
  PluginFieldCollection fields_{};
};

class KVGatherCreator final : public IPluginCreatorV3One {
 public:
  KVGatherCreator() {
    field_ = PluginField(kFieldNumFrames, nullptr, PluginFieldType::kINT32, 1);
    fields_.nbFields = 1;
    fields_.fields = &field_;
  }

  char const* getPluginName() const noexcept override { return kName; }
  char const* getPluginVersion() const noexcept override { return kVersion; }
  char const* getPluginNamespace() const noexcept override { return ""; }
  PluginFieldCollection const* getFieldNames() noexcept override { return &fields_; }

  // The ONNX parser passes node attributes as fields (an ONNX int may arrive as INT32 or INT64).
  IPluginV3* createPlugin(char const*, PluginFieldCollection const* fc, TensorRTPhase) noexcept override {
    int64_t num_frames = 0;
    for (int32_t i = 0; fc && i < fc->nbFields; ++i) {
      PluginField const& f = fc->fields[i];
      if (std::strcmp(f.name, kFieldNumFrames) != 0 || f.length < 1 || f.data == nullptr) continue;
      if (f.type == PluginFieldType::kINT32) num_frames = *static_cast<int32_t const*>(f.data);
      if (f.type == PluginFieldType::kINT64) num_frames = *static_cast<int64_t const*>(f.data);
    }
    if (num_frames < 1) {
      log_error("KVGather: missing or invalid num_frames attribute");
      return nullptr;
    }
    return new (std::nothrow) KVGatherPlugin(static_cast<int32_t>(num_frames));
  }

 private:
  PluginField field_;
  PluginFieldCollection fields_{};
};

}  // namespace
}  // namespace tav

extern "C" {

__attribute__((visibility("default"))) IPluginCreatorInterface* const* getCreators(int32_t& nbCreators) {
  static tav::KVGatherCreator creator;
  static IPluginCreatorInterface* const creators[] = {&creator};
  nbCreators = 1;
  return creators;
}

__attribute__((visibility("default"))) void setLoggerFinder(ILoggerFinder* finder) { tav::gLoggerFinder = finder; }

}  // extern "C"
