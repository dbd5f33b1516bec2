// Writer for the driver's output contract: events.jsonl (see native/README.md, "Output contract").
// Every line is flushed before the call returns, so the last stage written survives a crash.
#pragma once
#include <cstdio>
#include <string>
#include <vector>

namespace mnnrepro {

constexpr int kEventsVersion = 1;

// A tiny JSON object builder; values are escaped, numbers written with full float precision.
class Json {
public:
    Json& str(const char* key, const std::string& value);
    Json& num(const char* key, double value);
    Json& integer(const char* key, long long value);
    Json& boolean(const char* key, bool value);
    Json& null(const char* key);
    Json& raw(const char* key, const std::string& json);  // value already JSON
    Json& strs(const char* key, const std::vector<std::string>& values);
    std::string done() const;

private:
    void key(const char* k);
    std::string mBody;
};

std::string jsonEscape(const std::string& s);

class EventLog {
public:
    bool open(const std::string& path);
    // Writes {"v":1,"event":name,"t":seconds_since_start,...fields} and flushes.
    void emit(const char* name, const Json& fields);
    void stage(const char* name, int step = -1);
    void setProgram(const char* name) { mProgram = name; }  // the prefix of stage lines on stderr
    ~EventLog();

private:
    FILE* mFile = nullptr;
    const char* mProgram = "mnist_driver";
};

double monotonicSeconds();

}  // namespace mnnrepro
