// Runs an artifact of `e3relax export` on one crystal read from a text file and prints the relaxed
// structure: a TorchScript file (.ts.pt) through torch::jit::load, or an AOTInductor package (.pt2)
// through torch::inductor::AOTIModelPackageLoader. Needs only libtorch; an artifact that calls the
// compiled ops (every .pt2, and .ts.pt unless exported with --ops reference) also needs the e3relax op
// library, dlopen'ed here first so that its ops are registered with the dispatcher.
//
// Input file (whitespace separated, '#' starts a comment line):
//   N                       number of atoms
//   ax ay az                lattice vector 1 (Angstrom), then vectors 2 and 3 on the next lines
//   bx by bz
//   cx cy cz
//   px py pz                periodicity flags (1/0) of the three axes
//   Z x y z                 N lines: atomic number and Cartesian position (Angstrom)
// Output: "cell" and 3 rows, then "atoms N" and N rows "Z x y z" (%.10f).
#include <dlfcn.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/script.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::vector<double> read_numbers(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw std::runtime_error("cannot open " + path);
  std::vector<double> numbers;
  std::string line;
  while (std::getline(file, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    double value;
    while (fields >> value) numbers.push_back(value);
  }
  return numbers;
}

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Relaxed (positions [N,3], cell [1,3,3]) from a TorchScript file; its dtype is its parameters'.
std::pair<torch::Tensor, torch::Tensor> run_torchscript(const std::string& path, const torch::Tensor& pos,
                                                         const torch::Tensor& z, const torch::Tensor& cell,
                                                         const torch::Tensor& pbc, const torch::Tensor& ptr) {
  torch::jit::Module model = torch::jit::load(path);
  model.eval();
  const auto dtype = (*model.parameters().begin()).scalar_type();
  auto out = model.forward({pos.to(dtype), z, cell.to(dtype), pbc, ptr}).toTuple();
  return {out->elements()[0].toTensor(), out->elements()[1].toTensor()};
}

// The same from an AOTInductor package, which returns every layer: the last one is the prediction.
std::pair<torch::Tensor, torch::Tensor> run_aoti(const std::string& path, const torch::Tensor& pos,
                                                 const torch::Tensor& z, const torch::Tensor& cell,
                                                 const torch::Tensor& pbc, const torch::Tensor& ptr) {
  torch::inductor::AOTIModelPackageLoader loader(path);
  const std::string metadata = loader.get_metadata()["e3relax_metadata"];
  const auto dtype = metadata.find("\"dtype\": \"float64\"") != std::string::npos ? torch::kFloat64 : torch::kFloat32;
  std::vector<torch::Tensor> out = loader.run({pos.to(dtype), z, cell.to(dtype), pbc, ptr});
  return {out.at(0)[-1], out.at(1)[-1]};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: relax_crystal MODEL.ts.pt|MODEL.pt2 CRYSTAL.txt [E3RELAX_OP_LIBRARY.so]\n";
    return 2;
  }
  if (argc > 3 && dlopen(argv[3], RTLD_NOW | RTLD_GLOBAL) == nullptr) {
    std::cerr << "cannot load the op library: " << dlerror() << "\n";
    return 1;
  }
  try {
    const std::vector<double> v = read_numbers(argv[2]);
    if (v.empty()) throw std::runtime_error("empty crystal file");
    const int64_t n = static_cast<int64_t>(v[0]);
    if (n < 1 || static_cast<int64_t>(v.size()) != 1 + 9 + 3 + 4 * n)
      throw std::runtime_error("crystal file: expected N, 9 cell numbers, 3 pbc flags and N lines 'Z x y z'");

    const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);

    torch::Tensor cell = torch::from_blob(const_cast<double*>(v.data() + 1), {1, 3, 3}, f64).clone();
    torch::Tensor pbc = torch::empty({1, 3}, torch::kBool);
    for (int k = 0; k < 3; ++k) pbc[0][k] = v[10 + k] != 0.0;
    torch::Tensor z = torch::empty({n}, torch::kLong);
    torch::Tensor pos = torch::empty({n, 3}, f64);
    for (int64_t i = 0; i < n; ++i) {
      const double* row = v.data() + 13 + 4 * i;
      z[i] = static_cast<int64_t>(row[0]);
      for (int k = 0; k < 3; ++k) pos[i][k] = row[1 + k];
    }
    torch::Tensor ptr = torch::tensor({int64_t{0}, n}, torch::kLong);

    torch::NoGradGuard no_grad;
    const std::string model_path = argv[1];
    auto relaxed = ends_with(model_path, ".pt2") ? run_aoti(model_path, pos, z, cell, pbc, ptr)
                                                 : run_torchscript(model_path, pos, z, cell, pbc, ptr);
    torch::Tensor new_pos = relaxed.first.to(torch::kFloat64);
    torch::Tensor new_cell = relaxed.second.to(torch::kFloat64);

    std::printf("cell\n");
    for (int k = 0; k < 3; ++k)
      std::printf("%.10f %.10f %.10f\n", new_cell[0][k][0].item<double>(), new_cell[0][k][1].item<double>(),
                  new_cell[0][k][2].item<double>());
    std::printf("atoms %lld\n", static_cast<long long>(n));
    for (int64_t i = 0; i < n; ++i)
      std::printf("%lld %.10f %.10f %.10f\n", static_cast<long long>(z[i].item<int64_t>()),
                  new_pos[i][0].item<double>(), new_pos[i][1].item<double>(), new_pos[i][2].item<double>());
  } catch (const std::exception& err) {
    std::cerr << "relax_crystal: " << err.what() << "\n";
    return 1;
  }
  return 0;
}
