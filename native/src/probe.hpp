// Independent probes of the GPU stacks MNN will use, so the driver can say which device was active and,
// when MNN silently fell back to the CPU, why. Each probe loads the same library names MNN loads.
#pragma once
#include <string>
#include <vector>

namespace mnnrepro {

struct VulkanProbe {
    bool libraryLoaded = false;      // dlopen("libvulkan.so"): the unversioned name MNN itself opens
    std::string libraryError;
    bool instanceCreated = false;
    std::string instanceError;
    int deviceCount = 0;
    // Physical device 0: MNN always takes the first one.
    std::string deviceName;
    std::string deviceType;
    std::string driverName;
    std::string driverInfo;
    std::string apiVersion;
    unsigned vendorId = 0;
    unsigned deviceId = 0;
    // The validation canary (--vk-canary, issue 25): one deliberate invalid call through the same loader, so a
    // validation run proves the layer is there by the layer's own report of CANARY_VUID.
    bool canaryMade = false;
};

// The canary's call and the VUID the Khronos validation layer reports for it (src/mnnrepro/validation.py).
constexpr const char* kCanaryCall = "vkGetPhysicalDeviceProperties2";
constexpr const char* kCanaryVuid = "VUID-VkPhysicalDeviceProperties2-sType-sType";

// canary: make the canary call on device 0 (never without --vk-canary: Lenet's runs stay as they were).
VulkanProbe probeVulkan(bool canary = false);

struct OpenCLDevice {
    std::string platform;
    std::string name;
    std::string type;  // "GPU", "CPU", "ACCELERATOR", ...
    std::string version;
};

struct OpenCLProbe {
    bool libraryLoaded = false;  // dlopen("libOpenCL.so")
    std::string libraryError;
    std::vector<OpenCLDevice> devices;
};

OpenCLProbe probeOpenCL();

}  // namespace mnnrepro
