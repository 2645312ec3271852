// device-check: the CUDA smoke test of tests/Anneal.Training.Tests (CudaSmokeTests) for the GPU
// machine, which has the bundle but no test runner. Prints the step-by-step table; exit code 1
// when the device's losses leave the bf16 tolerance.
using System.Text.Json.Nodes;
using Anneal.Training.Diagnostics;

static class DeviceCheckBench
{
    public static int Run(Options o)
    {
        var dir = Directory.CreateTempSubdirectory("anneal-device-check-").FullName;
        try
        {
            var steps = o.Steps == 10 ? 4 : o.Steps;   // 10 is the global default; the check takes 4
            var result = DeviceCheck.Run(o.Device, dir, steps, cpuBf16: o.Device == "cpu");
            Console.WriteLine(result.Report());
            if (o.Json is { } json)
                File.WriteAllText(json, new JsonObject
                {
                    ["device"] = result.Device, ["dtype"] = result.Dtype, ["passed"] = result.Passed, ["tolerance"] = result.Tolerance,
                    ["rows"] = new JsonArray(result.Rows.Select(r => (JsonNode)new JsonObject
                    {
                        ["name"] = r.Name,
                        ["cpu_fp32"] = new JsonArray(r.Reference.Select(x => (JsonNode)x).ToArray()),
                        ["device"] = new JsonArray(r.Losses.Select(x => (JsonNode)x).ToArray()),
                        ["worst_relative_difference"] = r.WorstRelativeDifference,
                    }).ToArray()),
                }.ToJsonString(new() { WriteIndented = true }));
            return result.Passed ? 0 : 1;
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
