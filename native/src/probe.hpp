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
};

VulkanProbe probeVulkan();

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
