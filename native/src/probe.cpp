#include "probe.hpp"

#include <dlfcn.h>

#include <cstdio>
#include <cstring>

#define VK_NO_PROTOTYPES 1
#include "vulkan/vulkan_core.h"  // MNN ships the Vulkan headers in source/backend/vulkan/vulkan/
#define CL_TARGET_OPENCL_VERSION 120
#include "CL/cl.h"

namespace mnnrepro {

static std::string versionString(uint32_t v) {
    char buf[32];
    snprintf(buf, sizeof(buf), "%u.%u.%u", VK_VERSION_MAJOR(v), VK_VERSION_MINOR(v), VK_VERSION_PATCH(v));
    return buf;
}

static const char* deviceTypeName(VkPhysicalDeviceType t) {
    switch (t) {
        case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated-gpu";
        case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete-gpu";
        case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual-gpu";
        case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
        default: return "other";
    }
}

VulkanProbe probeVulkan(bool canary) {
    VulkanProbe p;
    void* lib = dlopen("libvulkan.so", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char* e = dlerror();
        p.libraryError = e ? e : "dlopen(libvulkan.so) failed";
        return p;
    }
    p.libraryLoaded = true;
    auto getProc = reinterpret_cast<PFN_vkGetInstanceProcAddr>(dlsym(lib, "vkGetInstanceProcAddr"));
    if (!getProc) {
        p.instanceError = "libvulkan.so has no vkGetInstanceProcAddr";
        return p;
    }
    auto createInstance = reinterpret_cast<PFN_vkCreateInstance>(getProc(nullptr, "vkCreateInstance"));
    VkApplicationInfo app{};
    app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO;
    app.pApplicationName = "mnnrepro-probe";
    app.apiVersion = VK_API_VERSION_1_1;
    VkInstanceCreateInfo ci{};
    ci.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO;
    ci.pApplicationInfo = &app;
    VkInstance instance = VK_NULL_HANDLE;
    VkResult r = createInstance ? createInstance(&ci, nullptr, &instance) : VK_ERROR_INITIALIZATION_FAILED;
    if (r != VK_SUCCESS) {
        p.instanceError = "vkCreateInstance returned " + std::to_string(int(r)) +
                          (r == VK_ERROR_INCOMPATIBLE_DRIVER ? " (VK_ERROR_INCOMPATIBLE_DRIVER: no usable ICD)" : "");
        return p;
    }
    p.instanceCreated = true;
    auto enumerate =
        reinterpret_cast<PFN_vkEnumeratePhysicalDevices>(getProc(instance, "vkEnumeratePhysicalDevices"));
    auto getProps =
        reinterpret_cast<PFN_vkGetPhysicalDeviceProperties>(getProc(instance, "vkGetPhysicalDeviceProperties"));
    auto getProps2 =
        reinterpret_cast<PFN_vkGetPhysicalDeviceProperties2>(getProc(instance, "vkGetPhysicalDeviceProperties2"));
    auto destroy = reinterpret_cast<PFN_vkDestroyInstance>(getProc(instance, "vkDestroyInstance"));
    uint32_t count = 0;
    if (enumerate && enumerate(instance, &count, nullptr) == VK_SUCCESS && count > 0) {
        p.deviceCount = int(count);
        std::vector<VkPhysicalDevice> devs(count);
        enumerate(instance, &count, devs.data());
        VkPhysicalDeviceProperties props{};
        getProps(devs[0], &props);
        p.deviceName = props.deviceName;
        p.deviceType = deviceTypeName(props.deviceType);
        p.apiVersion = versionString(props.apiVersion);
        p.vendorId = props.vendorID;
        p.deviceId = props.deviceID;
        if (getProps2 && props.apiVersion >= VK_API_VERSION_1_2) {
            VkPhysicalDeviceDriverProperties driver{};
            driver.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES;
            VkPhysicalDeviceProperties2 props2{};
            props2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2;
            props2.pNext = &driver;
            getProps2(devs[0], &props2);
            p.driverName = driver.driverName;
            p.driverInfo = driver.driverInfo;
        }
        if (canary && getProps2) {
            // A wrong sType on the top structure: the layer reports kCanaryVuid and skips the call; a driver
            // without the layer fills the properties and ignores the tag (harmless on lavapipe and SwiftShader).
            VkPhysicalDeviceProperties2 bad{};
            bad.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO;
            getProps2(devs[0], &bad);
            p.canaryMade = true;
        }
    }
    if (destroy) destroy(instance, nullptr);
    // The library stays loaded: unloading a Vulkan ICD before MNN loads it again has crashed some drivers.
    return p;
}

OpenCLProbe probeOpenCL() {
    OpenCLProbe p;
    void* lib = dlopen("libOpenCL.so", RTLD_NOW | RTLD_LOCAL);
    if (!lib) lib = dlopen("libOpenCL.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        const char* e = dlerror();
        p.libraryError = e ? e : "dlopen(libOpenCL.so) failed";
        return p;
    }
    p.libraryLoaded = true;
    using GetPlatforms = cl_int (*)(cl_uint, cl_platform_id*, cl_uint*);
    using GetPlatformInfo = cl_int (*)(cl_platform_id, cl_platform_info, size_t, void*, size_t*);
    using GetDevices = cl_int (*)(cl_platform_id, cl_device_type, cl_uint, cl_device_id*, cl_uint*);
    using GetDeviceInfo = cl_int (*)(cl_device_id, cl_device_info, size_t, void*, size_t*);
    auto getPlatforms = reinterpret_cast<GetPlatforms>(dlsym(lib, "clGetPlatformIDs"));
    auto getPlatformInfo = reinterpret_cast<GetPlatformInfo>(dlsym(lib, "clGetPlatformInfo"));
    auto getDevices = reinterpret_cast<GetDevices>(dlsym(lib, "clGetDeviceIDs"));
    auto getDeviceInfo = reinterpret_cast<GetDeviceInfo>(dlsym(lib, "clGetDeviceInfo"));
    if (!getPlatforms || !getPlatformInfo || !getDevices || !getDeviceInfo) {
        p.libraryError = "libOpenCL.so lacks the platform/device query functions";
        return p;
    }
    cl_uint nplat = 0;
    if (getPlatforms(0, nullptr, &nplat) != CL_SUCCESS || nplat == 0) return p;
    std::vector<cl_platform_id> plats(nplat);
    getPlatforms(nplat, plats.data(), nullptr);
    for (auto plat : plats) {
        char pname[256] = {0};
        getPlatformInfo(plat, CL_PLATFORM_NAME, sizeof(pname) - 1, pname, nullptr);
        cl_uint ndev = 0;
        if (getDevices(plat, CL_DEVICE_TYPE_ALL, 0, nullptr, &ndev) != CL_SUCCESS || ndev == 0) continue;
        std::vector<cl_device_id> devs(ndev);
        getDevices(plat, CL_DEVICE_TYPE_ALL, ndev, devs.data(), nullptr);
        for (auto d : devs) {
            OpenCLDevice od;
            od.platform = pname;
            char buf[256] = {0};
            getDeviceInfo(d, CL_DEVICE_NAME, sizeof(buf) - 1, buf, nullptr);
            od.name = buf;
            memset(buf, 0, sizeof(buf));
            getDeviceInfo(d, CL_DEVICE_VERSION, sizeof(buf) - 1, buf, nullptr);
            od.version = buf;
            cl_device_type t = 0;
            getDeviceInfo(d, CL_DEVICE_TYPE, sizeof(t), &t, nullptr);
            od.type = (t & CL_DEVICE_TYPE_GPU) ? "GPU" : (t & CL_DEVICE_TYPE_CPU) ? "CPU"
                      : (t & CL_DEVICE_TYPE_ACCELERATOR) ? "ACCELERATOR" : "OTHER";
            p.devices.push_back(od);
        }
    }
    return p;
}

}  // namespace mnnrepro
