// Asio and Beast are compiled here once (BOOST_*_SEPARATE_COMPILATION), so
// no other translation unit instantiates their implementation.
#include <boost/asio/impl/src.hpp>
#include <boost/beast/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
