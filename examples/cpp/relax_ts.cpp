// Runs a TorchScript artifact of `e3relax export` on one crystal read from a text file and prints the
// relaxed structure. Needs only libtorch; an artifact exported with the compiled ops (the default)
// also needs the e3relax op library, dlopen'ed here before torch::jit::load so its ops are registered.
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

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: relax_ts MODEL.ts.pt CRYSTAL.txt [E3RELAX_OP_LIBRARY.so]\n";
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

    torch::jit::Module model = torch::jit::load(argv[1]);
    model.eval();
    // The artifact runs in the dtype it was exported in: take it from its first parameter.
    const auto dtype = (*model.parameters().begin()).scalar_type();
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
    auto out = model.forward({pos.to(dtype), z, cell.to(dtype), pbc, ptr}).toTuple();
    torch::Tensor new_pos = out->elements()[0].toTensor().to(torch::kFloat64);
    torch::Tensor new_cell = out->elements()[1].toTensor().to(torch::kFloat64);

    std::printf("cell\n");
    for (int k = 0; k < 3; ++k)
      std::printf("%.10f %.10f %.10f\n", new_cell[0][k][0].item<double>(), new_cell[0][k][1].item<double>(),
                  new_cell[0][k][2].item<double>());
    std::printf("atoms %lld\n", static_cast<long long>(n));
    for (int64_t i = 0; i < n; ++i)
      std::printf("%lld %.10f %.10f %.10f\n", static_cast<long long>(z[i].item<int64_t>()),
                  new_pos[i][0].item<double>(), new_pos[i][1].item<double>(), new_pos[i][2].item<double>());
  } catch (const std::exception& err) {
    std::cerr << "relax_ts: " << err.what() << "\n";
    return 1;
  }
  return 0;
}
