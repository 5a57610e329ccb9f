//! Empty: this package only exists to fetch its dependency.
