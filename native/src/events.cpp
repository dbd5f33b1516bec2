#include "events.hpp"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>

namespace mnnrepro {

static const auto kStart = std::chrono::steady_clock::now();

double monotonicSeconds() {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - kStart).count();
}

std::string jsonEscape(const std::string& s) {
    std::string out;
    out.reserve(s.size() + 2);
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    snprintf(buf, sizeof(buf), "\\u%04x", c);
                    out += buf;
                } else {
                    out += static_cast<char>(c);
                }
        }
    }
    return out;
}

void Json::key(const char* k) {
    if (!mBody.empty()) mBody += ',';
    mBody += '"';
    mBody += jsonEscape(k);
    mBody += "\":";
}

Json& Json::str(const char* k, const std::string& value) {
    key(k);
    mBody += '"' + jsonEscape(value) + '"';
    return *this;
}

Json& Json::num(const char* k, double value) {
    key(k);
    if (std::isfinite(value)) {
        char buf[40];
        snprintf(buf, sizeof(buf), "%.9g", value);
        mBody += buf;
    } else {
        // JSON has no NaN/Inf; a string keeps the fact visible to the judge.
        mBody += std::isnan(value) ? "\"nan\"" : (value > 0 ? "\"inf\"" : "\"-inf\"");
    }
    return *this;
}

Json& Json::integer(const char* k, long long value) {
    key(k);
    mBody += std::to_string(value);
    return *this;
}

Json& Json::boolean(const char* k, bool value) {
    key(k);
    mBody += value ? "true" : "false";
    return *this;
}

Json& Json::null(const char* k) {
    key(k);
    mBody += "null";
    return *this;
}

Json& Json::raw(const char* k, const std::string& json) {
    key(k);
    mBody += json;
    return *this;
}

Json& Json::strs(const char* k, const std::vector<std::string>& values) {
    key(k);
    mBody += '[';
    for (size_t i = 0; i < values.size(); ++i) {
        if (i) mBody += ',';
        mBody += '"' + jsonEscape(values[i]) + '"';
    }
    mBody += ']';
    return *this;
}

std::string Json::done() const { return "{" + mBody + "}"; }

bool EventLog::open(const std::string& path) {
    mFile = fopen(path.c_str(), "w");
    return mFile != nullptr;
}

void EventLog::emit(const char* name, const Json& fields) {
    std::string body = fields.done();
    char head[128];
    snprintf(head, sizeof(head), "{\"v\":%d,\"event\":\"%s\",\"t\":%.6f", kEventsVersion, name, monotonicSeconds());
    std::string line = head;
    if (body.size() > 2) {
        line += ',';
        line += body.substr(1, body.size() - 2);
    }
    line += "}\n";
    if (mFile) {
        fputs(line.c_str(), mFile);
        fflush(mFile);
    }
}

void EventLog::stage(const char* name, int step) {
    Json j;
    j.str("name", name);
    if (step >= 0) j.integer("step", step);
    emit("stage", j);
    // The stage is also echoed to stderr so a human watching a crash sees where it was.
    if (step >= 0) {
        fprintf(stderr, "[%s] stage %s step %d\n", mProgram, name, step);
    } else {
        fprintf(stderr, "[%s] stage %s\n", mProgram, name);
    }
    fflush(stderr);
}

EventLog::~EventLog() {
    if (mFile) fclose(mFile);
}

}  // namespace mnnrepro
