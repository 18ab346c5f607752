// The softmax toolkit (attnkit/core/softmax.hpp) for Python: every function
// works row-wise over the LAST axis of an array (..., m), in float32 or
// float64 (float64 inputs stay float64, everything else computes in
// float32). Inputs are read in place when C-contiguous; the library returns
// its results by value and numpy adopts them without a copy.

#include <limits>

#include "attnkit/core/softmax.hpp"
#include "bindings.hpp"

namespace attnkit_python {

namespace {

Shape lead_of(const Shape& s) {
  return Shape(s.begin(), s.end() - 1);
}

/// Calls f(Array, type tag) with x as float32 or float64 rows (..., m).
template <typename F>
py::array with_rows(const char* where, const char* name, py::handle x, F&& f) {
  const py::array a = as_numpy(x, where, name);
  check_shape(where, name, Shape(a.shape(), a.shape() + a.ndim()), 1);
  if (is_float64(a)) return f(contiguous<double>(a, where, name), double{});
  return f(contiguous<float>(a, where, name), float{});
}

template <typename Function>
py::array matrix_function(const char* where, py::handle x, Function&& fn) {
  return with_rows(where, "x", x, [&](const Array& a, auto tag) {
    using C = decltype(tag);
    RowMatrix<C> r;
    {
      py::gil_scoped_release nogil;
      r = fn(a.matrix<C>());
    }
    return adopt(std::move(r), a.shape);
  });
}

template <typename Function>
py::array row_statistic(const char* where, py::handle p, Function&& fn) {
  return with_rows(where, "p", p, [&](const Array& a, auto tag) {
    using C = decltype(tag);
    Vector<C> r;
    {
      py::gil_scoped_release nogil;
      r = fn(a.matrix<C>());
    }
    return adopt(std::move(r), lead_of(a.shape));
  });
}

py::array softmax(py::handle x, double beta) {
  return matrix_function("softmax", x, [&](const auto& m) {
    using C = typename std::decay_t<decltype(m)>::Scalar;
    return attnkit::softmax(m, static_cast<C>(beta));
  });
}

py::array logsumexp(py::handle x, double beta) {
  return with_rows("logsumexp", "x", x, [&](const Array& a, auto tag) {
    using C = decltype(tag);
    Vector<C> r;
    {
      py::gil_scoped_release nogil;
      r = attnkit::log_sum_exp(a.matrix<C>(), static_cast<C>(beta));
    }
    return adopt(std::move(r), lead_of(a.shape));
  });
}

py::array log_softmax(py::handle x, double beta) {
  return matrix_function("log_softmax", x, [&](const auto& m) {
    using C = typename std::decay_t<decltype(m)>::Scalar;
    const Vector<C> lse = attnkit::log_sum_exp(m, static_cast<C>(beta));
    RowMatrix<C> r = static_cast<C>(beta) * m;
    constexpr C inf = std::numeric_limits<C>::infinity();
    for (Index i = 0; i < r.rows(); ++i) {
      if (lse(i) == -inf)
        r.row(i).setConstant(-inf);  // log of the zero row of a row that is all -inf
      else
        r.row(i).array() -= lse(i);
    }
    return r;
  });
}

py::array softmax_jacobian(py::handle p) {
  const char* where = "softmax_jacobian";
  return with_rows(where, "p", p, [&](const Array& a, auto tag) {
    using C = decltype(tag);
    const Index m = a.cols();
    RowMatrix<C> r(a.rows() * m, m);
    {
      py::gil_scoped_release nogil;
      const ConstMap<C> rows = a.matrix<C>();
      for (Index i = 0; i < a.rows(); ++i)
        r.middleRows(i * m, m) = attnkit::softmax_jacobian(rows.row(i));
    }
    Shape shape = a.shape;
    shape.push_back(m);
    return adopt(std::move(r), shape);
  });
}

py::array softmax_jacobian_product(py::handle p, py::handle g) {
  const char* where = "softmax_jacobian_product";
  const py::array pa = as_numpy(p, where, "p"), ga = as_numpy(g, where, "g");
  const Shape ps(pa.shape(), pa.shape() + pa.ndim()), gs(ga.shape(), ga.shape() + ga.ndim());
  check_shape(where, "p", ps, 1);
  if (ps != gs)
    value_error(where, ": p ", shape_string(ps), " and g ", shape_string(gs), " must have the same shape");
  const auto run = [&](auto tag) {
    using C = decltype(tag);
    const Array pc = contiguous<C>(pa, where, "p"), gc = contiguous<C>(ga, where, "g");
    RowMatrix<C> r;
    {
      py::gil_scoped_release nogil;
      r = attnkit::softmax_jacobian_product(pc.matrix<C>(), gc.matrix<C>());
    }
    return adopt(std::move(r), ps);
  };
  return compute_dtype({&pa, &ga}) == DType::f64 ? run(double{}) : run(float{});
}

constexpr const char* doc_softmax = R"doc(
softmax(x, beta=1.0) -> (..., m): row-wise softmax of beta * x over the last
axis. A -inf entry gets probability exactly 0; a row of only -inf gives a
zero row; NaN or +inf makes its row NaN; finite values of any size never
overflow (the row maximum is subtracted). beta: inverse temperature, finite
and > 0.
)doc";

}  // namespace

void register_softmax(py::module_& m) {
  using namespace pybind11::literals;
  m.def("softmax", &softmax, doc_softmax, "x"_a, "beta"_a = 1.0);
  m.def("log_softmax", &log_softmax,
        "log_softmax(x, beta=1.0) -> (..., m): beta * x - logsumexp(x, beta), row-wise over the last axis; a "
        "row "
        "of only -inf gives -inf everywhere (the log of softmax's zero row).",
        "x"_a, "beta"_a = 1.0);
  m.def("logsumexp", &logsumexp,
        "logsumexp(x, beta=1.0) -> (...): log sum_j exp(beta x_j) over the last axis; -inf for a row of only "
        "-inf, "
        "NaN for a row with NaN or +inf.",
        "x"_a, "beta"_a = 1.0);
  m.def("softmax_jacobian", &softmax_jacobian,
        "softmax_jacobian(p) -> (..., m, m): J = diag(s) - s s^T for each probability row s of p (..., m).",
        "p"_a);
  m.def("softmax_jacobian_product", &softmax_jacobian_product,
        "softmax_jacobian_product(p, g) -> (..., m): J g row by row without forming J, (J g)_i = s_i (g_i - "
        "<s, g>); "
        "J is symmetric, so with g = dL/ds this is the backward pass dL/dz.",
        "p"_a, "g"_a);
  m.def(
      "entropy",
      [](py::handle p) {
        return row_statistic("entropy", p, [](const auto& x) { return attnkit::entropy(x); });
      },
      "entropy(p) -> (...): -sum_j p_j log p_j (nats) of each row, 0 log 0 = 0. Entries must be in [0, 1] or "
      "NaN "
      "(ValueError names the first offending entry); a NaN entry makes its row NaN.",
      "p"_a);
  m.def(
      "max_probability",
      [](py::handle p) {
        return row_statistic("max_probability", p, [](const auto& x) { return attnkit::max_probability(x); });
      },
      "max_probability(p) -> (...): the largest entry of each row (1/m uniform .. 1 one-hot).", "p"_a);
  m.def(
      "effective_support",
      [](py::handle p) {
        return row_statistic("effective_support", p,
                             [](const auto& x) { return attnkit::effective_support(x); });
      },
      "effective_support(p) -> (...): exp(entropy) of each row, the number of keys a row 'really' attends "
      "to.",
      "p"_a);
  m.def(
      "jacobian_frobenius_norm",
      [](py::handle p) {
        return row_statistic("jacobian_frobenius_norm", p,
                             [](const auto& x) { return attnkit::jacobian_frobenius_norm(x); });
      },
      "jacobian_frobenius_norm(p) -> (...): ||diag(s) - s s^T||_F of each probability row (closed form, "
      "O(m)).",
      "p"_a);
}

}  // namespace attnkit_python
