"""mnnrepro: regression suite and reproduction environment for MNN GPU-backend training bugs.

The first bug it covers is alibaba/MNN#3129: MNIST training on the Vulkan backend segfaults in the first
SGD step when MNN is built in Vulkan image mode, and trains in buffer mode.
"""

__version__ = "0.1.0"
