#include "caffe/util/approx_dropout_lazy_update.hpp"
#include "caffe/util/device_alternate.hpp"

namespace caffe {

namespace {

// One entry's fused step, as FusedEntry in approx_dropout_lazy_update.cpp.
template <typename Dtype>
__device__ inline void FusedEntryGpu(bool nesterov, Dtype momentum,
    Dtype rate, Dtype decay, Dtype* w, Dtype* h, Dtype* g) {
  const Dtype grad = *g + decay * *w;
  const Dtype old = *h;
  const Dtype fresh = rate * grad + momentum * old;
  *h = fresh;
  *w -= nesterov ? (1 + momentum) * fresh - momentum * old : fresh;
  *g = 0;
}

// blockIdx.x: the work item; blockIdx.y: a share of its rows. Each item is a
// rectangle of whole cells with, optionally, a product to apply first.
template <typename Dtype>
__global__ void LazyRunKernel(bool step, bool nesterov, const int* work,
    const Dtype* products, int cols, Dtype* w, Dtype* h, Dtype* g,
    Dtype momentum, Dtype rate, Dtype decay) {
  const int* item = work + 5 * blockIdx.x;
  const int row0 = item[0], row1 = item[1], col0 = item[2], col1 = item[3];
  const Dtype* p = item[4] >= 0 ? products + 4 * item[4] : NULL;
  const int width = col1 - col0;
  const int64_t entries = static_cast<int64_t>(row1 - row0) * width;
  for (int64_t i = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x;
       i < entries; i += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    const int64_t at = static_cast<int64_t>(row0 + i / width) * cols +
                       col0 + i % width;
    if (p) {
      const Dtype h0 = h[at], w0 = w[at];
      h[at] = p[0] * h0 + p[1] * w0;
      w[at] = p[2] * h0 + p[3] * w0;
    }
    if (step) {
      FusedEntryGpu(nesterov, momentum, rate, decay, w + at, h + at, g + at);
    }
  }
}

template <typename Dtype>
__global__ void LazyDenseKernel(bool nesterov, int count, Dtype* w, Dtype* h,
    Dtype* g, Dtype momentum, Dtype rate, Dtype decay) {
  CUDA_KERNEL_LOOP(i, count) {
    FusedEntryGpu(nesterov, momentum, rate, decay, w + i, h + i, g + i);
  }
}

}  // namespace

template <typename Dtype>
void LazyUpdateRunGpu(bool step, bool nesterov, int num_work, const int* work,
                      const Dtype* products, int cols, Dtype* w, Dtype* h,
                      Dtype* g, Dtype momentum, Dtype local_rate,
                      Dtype local_decay) {
  if (num_work == 0) return;
  // 32 row shares per item: enough blocks to fill the device with a few
  // large cells, few enough that small cells waste little.
  const dim3 grid(num_work, 32);
  LazyRunKernel<Dtype><<<grid, CAFFE_CUDA_NUM_THREADS>>>(step, nesterov, work,
      products, cols, w, h, g, momentum, local_rate, local_decay);
  CUDA_POST_KERNEL_CHECK;
}

template <typename Dtype>
void LazyUpdateDenseGpu(bool nesterov, int count, Dtype* w, Dtype* h,
                        Dtype* g, Dtype momentum, Dtype local_rate,
                        Dtype local_decay) {
  LazyDenseKernel<Dtype><<<CAFFE_GET_BLOCKS(count), CAFFE_CUDA_NUM_THREADS>>>(
      nesterov, count, w, h, g, momentum, local_rate, local_decay);
  CUDA_POST_KERNEL_CHECK;
}

template void LazyUpdateRunGpu<float>(bool, bool, int, const int*,
    const float*, int, float*, float*, float*, float, float, float);
template void LazyUpdateRunGpu<double>(bool, bool, int, const int*,
    const double*, int, double*, double*, double*, double, double, double);
template void LazyUpdateDenseGpu<float>(bool, int, float*, float*, float*,
    float, float, float);
template void LazyUpdateDenseGpu<double>(bool, int, double*, double*, double*,
    double, double, double);

}  // namespace caffe
