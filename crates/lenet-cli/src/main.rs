//! `lenet`: train, evaluate and run LeNet-5 on MNIST.

fn main() {
    eprintln!("lenet: not built yet; see README.md");
    std::process::exit(2);
}
